// int8 vector-wise quantization (LLM.int8) with optional fp16 outlier columns on the GPU,
// bit-identical to the CPU tier kernels/cpu/int8.hpp:
//   int8_column_absmax_kernel: one thread per input column, max_r |W[r, c]| (only when the
//     outlier threshold is on); the host compares it with the threshold exactly as the CPU
//     tier does and lists the outlier columns in ascending order.
//   int8_row_scales_kernel: one block per row, absmax over its non-outlier columns (a max
//     reduction: exact in any order), scale = absmax / 127 rounded up to fp16.
//   int8_codes_kernel: one thread per weight, clamp(round(w / scale), ±127) + 128 (128 at
//     outlier columns); then pack_codes (kernels/cuda/pack.hpp), 8 bits.
//   int8_outlier_weights_kernel: one thread per (row, outlier column), the fp16 weight.
//   int8_dequantize_kernel + int8_outlier_scatter_kernel: kernels/quantize.cpp dequantize()
//     for int8 (scale · (code − 128), then the outlier columns replaced), bit for bit.
// Test: shardq_gpu_tests --gtest_filter='Int8Cuda*'.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "common/tensor.hpp"
#include "kernels/quant_types.hpp"

namespace shardq::cuda {

// d_col_max[c] = max_r |d_w[r*cols + c]| (0 for rows == 0). Launches on `stream`.
void int8_column_absmax(const float* d_w, int64_t rows, int64_t cols, float* d_col_max, cudaStream_t stream);

// d_w [rows, cols] with the outlier flags d_is_outlier [cols] (0 or 1) and their ascending
// column list d_outlier_cols [n_out] (each in [0, cols)) → d_scales [rows] (fp16 bits),
// d_codes [rows, cols] and d_outlier_weights [rows, n_out] (fp16 bits), as cpu::int8_quantize
// chooses them. Launches on `stream`.
void int8_codes(const float* d_w, int64_t rows, int64_t cols, const uint8_t* d_is_outlier,
                const int32_t* d_outlier_cols, int64_t n_out, uint8_t* d_codes, uint16_t* d_scales,
                uint16_t* d_outlier_weights, cudaStream_t stream);

// d_wq [rows, cols] = fp16→fp32(d_scales[r]) · (d_codes[r*cols + c] − 128), then column
// d_outlier_cols[j] of each row r replaced by fp16→fp32(d_outlier_weights[r*n_out + j]):
// dequantize()'s int8 formula (zeros are always 128). Launches on `stream`.
void int8_dequantize_device(const uint8_t* d_codes, const uint16_t* d_scales, const int32_t* d_outlier_cols,
                            int64_t n_out, const uint16_t* d_outlier_weights, int64_t rows, int64_t cols, float* d_wq,
                            cudaStream_t stream);

// cpu::int8_quantize of the device weight d_w [rows, cols] (row-major, unchanged): the stored
// form on the host and, when d_wq is not null, the dequantized weights in the [rows, cols]
// device buffer d_wq, equal bit for bit to dequantize(result). Runs on `stream` and
// synchronizes it (also once in between when outlier_threshold > 0: the outlier columns are
// chosen on the host). Throws shardq::error when cols < 1 or rows < 0.
QuantizedLinear int8_quantize_device(const float* d_w, int64_t rows, int64_t cols, float outlier_threshold,
                                     float* d_wq, cudaStream_t stream);

// Host weights: upload, then int8_quantize_device; the contract of cpu::int8_quantize.
QuantizedLinear int8_quantize_cuda(const Tensor& w, float outlier_threshold);

}  // namespace shardq::cuda
