// NF4 (QLoRA, Dettmers et al. 2023; bitsandbytes quantize_4bit with quant_type "nf4",
// blocksize 64): per block of 64 consecutive input columns of a row, absmax scaling to
// [-1, 1] and the nearest of the 16 NormalFloat levels (kernels/quant_types.hpp).
// Test: shardq_unit_tests --gtest_filter='Nf4*'.
#pragma once

#include <cstdint>

#include "common/tensor.hpp"
#include "kernels/quant_types.hpp"

namespace shardq::cpu {

// Index of the level nearest to x (x in [-1, 1]); ties go to the lower level.
uint8_t nf4_code(float x);

// scales = absmax rounded to fp16 first; values are normalised by that rounded absmax and
// clamped to [-1, 1] (rounding may make |w| / absmax exceed 1 by an fp16 ulp). An all-zero
// block has scale 0 and code 7 (level 0.0).
QuantizedLinear nf4_quantize(const Tensor& w);

}  // namespace shardq::cpu
