// Public entry points of the quantizers: one dispatch over the methods of QuantConfig, the
// exact inverse (dequantization) of the stored form in kernels/quant_types.hpp, and the
// relative output error. The method kernels live in kernels/cpu/{gptq,rtn,nf4,int8}.hpp
// (gptq.hpp also has the row-range entry point used to split rows across ranks).
#pragma once

#include "common/tensor.hpp"
#include "kernels/quant_types.hpp"

namespace shardq {

// Throws spec_error naming the quant.* field when cfg is out of range for its method
// (bits 2/3/4/8 and group_size -1 or > 0 for gptq/rtn, block_size >= 1, damp >= 0).
void quant_config_check(const QuantConfig& cfg);

// quantize_linear's checks of its input (also run by the GPU job engine before a device
// quantizer): cfg as quant_config_check, w a non-empty matrix of finite values.
void quantize_check(const Tensor& w, const QuantConfig& cfg);

// Quantizes w [rows, cols] with cfg.method. h [cols, cols] (the layer input Hessian,
// upper triangle read) is required for gptq and ignored (may be empty) otherwise.
// nf4 always uses 4 bits and blocks of 64 columns; int8 always 8 bits, per row.
// Throws on a non-finite weight or a shape mismatch.
QuantizedLinear quantize_linear(const Tensor& w, const Tensor& h, const QuantConfig& cfg);

// W [rows, cols] in fp32 exactly as the formula of kernels/quant_types.hpp. Throws io_error
// when the arrays do not have the sizes rows/cols/bits/group_size imply.
Tensor dequantize(const QuantizedLinear& q);

// tr((W − Q) H (W − Q)ᵀ) / tr(W H Wᵀ) with Q = dequantize(q) (see kernels/cpu/quant_error.hpp).
double quant_relative_error(const Tensor& w, const QuantizedLinear& q, const Tensor& h);

}  // namespace shardq
