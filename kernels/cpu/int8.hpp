// int8 weight quantization (LLM.int8, Dettmers et al. 2022, vector-wise): one absmax scale per
// output channel, codes clamp(round(w / scale), -127, 127) + 128 with zero 128, optional
// outlier input columns kept in fp16. Test: shardq_unit_tests --gtest_filter='Int8*'.
#pragma once

#include "common/tensor.hpp"
#include "kernels/quant_types.hpp"

namespace shardq::cpu {

// scale = absmax / 127 rounded up to fp16 (so no weight clips); absmax over the row's
// non-outlier columns. outlier_threshold > 0 keeps every input column whose max |W[:, c]|
// exceeds it in fp16 (outlier_cols / outlier_weights); its codes are 128.
QuantizedLinear int8_quantize(const Tensor& w, float outlier_threshold);

}  // namespace shardq::cpu
