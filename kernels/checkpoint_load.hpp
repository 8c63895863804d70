// fp32 weights out of a shardq checkpoint: dequantizes a quantized linear with
// kernels/quantize.hpp's dequantize, converts one kept in floating point. (It lives in
// kernels/, not in common/checkpoint, because dequantization is numerics and kernels link
// against common, not the reverse.)
#pragma once

#include <string>

#include "common/checkpoint.hpp"
#include "common/tensor.hpp"

namespace shardq {

// W [rows, cols] of linear NAME (HF name with or without ".weight"): the quantized group
// NAME dequantized, or the float dataset NAME.weight converted. io_error when neither exists.
Tensor load_linear_fp32(const CheckpointReader& reader, const std::string& name);

}  // namespace shardq
