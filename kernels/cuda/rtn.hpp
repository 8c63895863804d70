// Round-to-nearest quantization on the uniform group grid, GPU tier (CPU tier:
// kernels/cpu/rtn.hpp, whose grid the device functions of kernels/cuda/grid.cuh copy).
//   rtn_codes_kernel: one thread per (row, group): min/max, fp16 scale, zero, codes
//   then pack_codes (kernels/cuda/pack.hpp).
// Codes, scales and zeros are bit-identical to cpu::rtn_quantize.
// Test: shardq_gpu_tests --gtest_filter='*RtnCuda*'.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "common/tensor.hpp"
#include "kernels/quant_types.hpp"

namespace shardq::cuda {

// d_w [rows, cols] → d_codes [rows, cols], d_scales (fp16 bits) and d_zeros [rows, n_groups].
void rtn_codes(const float* d_w, int64_t rows, int64_t cols, int64_t group_cols, int bits, bool sym,
               uint8_t* d_codes, uint16_t* d_scales, uint8_t* d_zeros, cudaStream_t stream);

// Host API with cpu::rtn_quantize's contract (cfg checked by quant_config_check).
QuantizedLinear rtn_quantize_cuda(const Tensor& w, const QuantConfig& cfg);

}  // namespace shardq::cuda
