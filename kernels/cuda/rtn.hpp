// Round-to-nearest quantization on the uniform group grid, GPU tier (CPU tier:
// kernels/cpu/rtn.hpp, whose grid the device functions of kernels/cuda/grid.cuh copy).
//   rtn_codes_kernel: one thread per (row, group): min/max, fp16 scale, zero, codes
//   then pack_codes (kernels/cuda/pack.hpp).
//   rtn_dequantize_device: gptq_dequantize (kernels/cuda/gptq.hpp) without g_idx — the
//   uniform-grid formula of dequantize() is the same for gptq and rtn.
// Codes, scales and zeros are bit-identical to cpu::rtn_quantize, the dequantized weights to
// dequantize().
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

// d_wq[r*cols + c] = fp16→fp32(d_scales[r*n_groups + g]) · (d_codes[r*cols + c] − d_zeros[r*n_groups + g]),
// g = c / group_cols: dequantize()'s formula. Launches on `stream`.
void rtn_dequantize_device(const uint8_t* d_codes, const uint16_t* d_scales, const uint8_t* d_zeros, int64_t rows,
                           int64_t cols, int64_t group_cols, float* d_wq, cudaStream_t stream);

// cpu::rtn_quantize of the device weight d_w [rows, cols] (row-major, unchanged): the stored
// form on the host and, when d_wq is not null, the dequantized weights in the [rows, cols]
// device buffer d_wq, equal bit for bit to dequantize(result). Runs on `stream` and
// synchronizes it before returning. Throws spec_error on a bad cfg (quant_config_check),
// shardq::error when cols < 1 or rows < 0.
QuantizedLinear rtn_quantize_device(const float* d_w, int64_t rows, int64_t cols, const QuantConfig& cfg, float* d_wq,
                                    cudaStream_t stream);

// Host weights: upload, then rtn_quantize_device; cpu::rtn_quantize's contract.
QuantizedLinear rtn_quantize_cuda(const Tensor& w, const QuantConfig& cfg);

}  // namespace shardq::cuda
