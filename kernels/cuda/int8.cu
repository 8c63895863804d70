// int8 (LLM.int8, vector-wise, fp16 outlier columns) on the GPU; see kernels/cuda/int8.hpp.
//   int8_column_absmax_kernel (one thread per column)
//   int8_row_scales_kernel (one block per row, shared-memory max reduction)
//   int8_codes_kernel, int8_dequantize_kernel (one thread per weight)
//   int8_outlier_weights_kernel, int8_outlier_scatter_kernel (one thread per (row, outlier))
// CPU reference: kernels/cpu/int8.cpp, kernels/quantize.cpp (dequantize).
// Test: shardq_gpu_tests --gtest_filter='Int8Cuda*'.
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/grid.cuh"
#include "kernels/cuda/int8.hpp"

namespace shardq::cuda {
namespace {

constexpr int row_threads = 256;  // a power of two: the tree reduction halves it

__global__ void int8_column_absmax_kernel(const float* __restrict__ w, int64_t rows, int64_t cols,
                                          float* __restrict__ col_max) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float m = 0.0f;
  for (int64_t r = 0; r < rows; ++r) m = fmaxf(m, fabsf(w[r * cols + c]));
  col_max[c] = m;
}

// cpu::int8_quantize's scale: fmaxf is std::max on finite values and max is exact in any
// order; __fdiv_rn is the IEEE quotient whatever nvcc's -prec-div says.
__global__ void int8_row_scales_kernel(const float* __restrict__ w, int64_t cols, const uint8_t* __restrict__ is_outlier,
                                       uint16_t* __restrict__ scales) {
  __shared__ float part[row_threads];
  const int64_t r = blockIdx.x;
  const float* row = w + r * cols;
  float absmax = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += row_threads)
    if (!is_outlier[c]) absmax = fmaxf(absmax, fabsf(row[c]));
  part[threadIdx.x] = absmax;
  __syncthreads();
  for (int s = row_threads / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) part[threadIdx.x] = fmaxf(part[threadIdx.x], part[threadIdx.x + s]);
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const float m = part[0];
    scales[r] = fp16_bits(m > 0.0f ? scale_to_fp16_up(__fdiv_rn(m, 127.0f)) : 0.0f);
  }
}

// rintf: round half to even, as std::nearbyint.
__global__ void int8_codes_kernel(const float* __restrict__ w, int64_t rows, int64_t cols,
                                  const uint8_t* __restrict__ is_outlier, const uint16_t* __restrict__ scales,
                                  uint8_t* __restrict__ codes) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * cols) return;
  const int64_t r = idx / cols, c = idx % cols;
  const float scale = __half2float(__ushort_as_half(scales[r]));
  float v = 0.0f;
  if (!is_outlier[c] && scale > 0.0f) v = fminf(fmaxf(rintf(__fdiv_rn(w[idx], scale)), -127.0f), 127.0f);
  codes[idx] = static_cast<uint8_t>(static_cast<int>(v) + int8_zero);
}

__global__ void int8_outlier_weights_kernel(const float* __restrict__ w, int64_t rows, int64_t cols,
                                            const int32_t* __restrict__ outlier_cols, int64_t n_out,
                                            uint16_t* __restrict__ outlier_weights) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * n_out) return;
  const int64_t r = idx / n_out, c = outlier_cols[idx % n_out];
  if (c < 0 || c >= cols) return;  // the host lists only columns of W; never read outside it
  outlier_weights[idx] = fp16_bits(w[r * cols + c]);
}

// dequantize(): scale · float(code − 128), one fp32 rounding (the product; the int difference
// converts exactly), fp16 → fp32 exact.
__global__ void int8_dequantize_kernel(const uint8_t* __restrict__ codes, const uint16_t* __restrict__ scales,
                                       int64_t rows, int64_t cols, float* __restrict__ wq) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * cols) return;
  const float scale = __half2float(__ushort_as_half(scales[idx / cols]));
  wq[idx] = __fmul_rn(scale, static_cast<float>(static_cast<int>(codes[idx]) - int8_zero));
}

// Runs after int8_dequantize_kernel on the same stream: the outlier columns overwrite, as in
// dequantize().
__global__ void int8_outlier_scatter_kernel(const int32_t* __restrict__ outlier_cols, int64_t n_out,
                                            const uint16_t* __restrict__ outlier_weights, int64_t rows, int64_t cols,
                                            float* __restrict__ wq) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * n_out) return;
  const int64_t r = idx / n_out, c = outlier_cols[idx % n_out];
  if (c < 0 || c >= cols) return;  // never write outside W (dequantize() rejects such a column)
  wq[r * cols + c] = __half2float(__ushort_as_half(outlier_weights[idx]));
}

}  // namespace

void int8_column_absmax(const float* d_w, int64_t rows, int64_t cols, float* d_col_max, cudaStream_t stream) {
  if (cols <= 0) return;
  int8_column_absmax_kernel<<<grid_for(cols, 128), 128, 0, stream>>>(d_w, rows, cols, d_col_max);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

void int8_codes(const float* d_w, int64_t rows, int64_t cols, const uint8_t* d_is_outlier,
                const int32_t* d_outlier_cols, int64_t n_out, uint8_t* d_codes, uint16_t* d_scales,
                uint16_t* d_outlier_weights, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  int8_row_scales_kernel<<<static_cast<unsigned>(rows), row_threads, 0, stream>>>(d_w, cols, d_is_outlier, d_scales);
  SHARDQ_CUDA_CHECK_LAUNCH();
  int8_codes_kernel<<<grid_for(rows * cols, 256), 256, 0, stream>>>(d_w, rows, cols, d_is_outlier, d_scales, d_codes);
  SHARDQ_CUDA_CHECK_LAUNCH();
  if (n_out <= 0) return;
  int8_outlier_weights_kernel<<<grid_for(rows * n_out, 256), 256, 0, stream>>>(d_w, rows, cols, d_outlier_cols, n_out,
                                                                               d_outlier_weights);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

void int8_dequantize_device(const uint8_t* d_codes, const uint16_t* d_scales, const int32_t* d_outlier_cols,
                            int64_t n_out, const uint16_t* d_outlier_weights, int64_t rows, int64_t cols, float* d_wq,
                            cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  int8_dequantize_kernel<<<grid_for(rows * cols, 256), 256, 0, stream>>>(d_codes, d_scales, rows, cols, d_wq);
  SHARDQ_CUDA_CHECK_LAUNCH();
  if (n_out <= 0) return;
  int8_outlier_scatter_kernel<<<grid_for(rows * n_out, 256), 256, 0, stream>>>(d_outlier_cols, n_out,
                                                                               d_outlier_weights, rows, cols, d_wq);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

}  // namespace shardq::cuda
