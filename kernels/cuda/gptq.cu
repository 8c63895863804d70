// GPTQ on the GPU, device half; the algorithm, mapping and contract are in kernels/cuda/gptq.hpp.
//   gptq_permute_transpose_kernel, gptq_block_kernel, gptq_unpermute_codes_kernel,
//   gptq_dequantize_kernel
// CPU reference: kernels/cpu/gptq.cpp (gptq_block_columns, group_params, gptq_quantize_rows),
// kernels/quantize.cpp (dequantize);
// the host driver is kernels/cuda/gptq.cpp. Test: shardq_gpu_tests --gtest_filter='*GptqCuda*:*GptqDevice*';
// benchmark: build-cuda/bench/bench_gpu_gptq.
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/gptq.hpp"
#include "kernels/cuda/grid.cuh"

namespace shardq::cuda {
namespace {

constexpr int tile = 32;

// Tiled transpose through shared memory: reads of W rows and writes of Wt rows both coalesced.
__global__ void gptq_permute_transpose_kernel(const float* __restrict__ w, int64_t rows, int64_t cols,
                                              const int32_t* __restrict__ perm, const uint8_t* __restrict__ dead,
                                              float* __restrict__ wt) {
  __shared__ float buf[tile][tile + 1];
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * tile, r0 = static_cast<int64_t>(blockIdx.y) * tile;
  for (int k = threadIdx.y; k < tile; k += blockDim.y) {
    const int64_t r = r0 + k, i = i0 + threadIdx.x;
    if (r < rows && i < cols) {
      const int32_t c = perm[i];
      buf[k][threadIdx.x] = dead[c] ? 0.0f : w[r * cols + c];
    }
  }
  __syncthreads();
  for (int k = threadIdx.y; k < tile; k += blockDim.y) {
    const int64_t i = i0 + k, r = r0 + threadIdx.x;
    if (r < rows && i < cols) wt[i * rows + r] = buf[threadIdx.x][k];
  }
}

__global__ void gptq_block_kernel(float* __restrict__ wt, float* __restrict__ err, uint8_t* __restrict__ codes_t,
                                  float* __restrict__ scale_state, float* __restrict__ zero_state,
                                  uint16_t* __restrict__ scales, uint8_t* __restrict__ zeros,
                                  const float* __restrict__ u, int64_t rows, int64_t cols, int64_t b0, int64_t b1,
                                  int64_t group_cols, int64_t n_groups, float maxq, bool sym) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  float scale = scale_state[r], zero = zero_state[r];
  for (int64_t j = b0; j < b1; ++j) {
    if (j % group_cols == 0) {
      // cpu group_params: columns past the block still lack this block's pending updates
      // from columns [b0, j); apply them to a copy, in the CPU's order.
      const int64_t g_end = min(cols, j + group_cols);
      float mn = INFINITY, mx = -INFINITY;
      for (int64_t c = j; c < g_end; ++c) {
        float v = wt[c * rows + r];
        if (c >= b1 && j > b0)
          for (int64_t m = b0; m < j; ++m) v = __fsub_rn(v, __fmul_rn(err[(m - b0) * rows + r], u[m * cols + c]));
        mn = fminf(mn, v);
        mx = fmaxf(mx, v);
      }
      const DeviceGrid p = grid_find_params(mn, mx, maxq, sym);
      scale = p.scale;
      zero = p.zero;
      const int64_t g = j / group_cols;
      scales[r * n_groups + g] = fp16_bits(scale);
      zeros[r * n_groups + g] = static_cast<uint8_t>(zero);
    }
    const float w = wt[j * rows + r];
    const float q = grid_quantize(w, scale, zero, maxq);
    codes_t[j * rows + r] = static_cast<uint8_t>(q);
    const float e = __fdiv_rn(__fsub_rn(w, grid_dequantize(q, scale, zero)), u[j * cols + j]);
    err[(j - b0) * rows + r] = e;
    const float* uj = u + j * cols;
    for (int64_t c = j + 1; c < b1; ++c) wt[c * rows + r] = __fsub_rn(wt[c * rows + r], __fmul_rn(e, uj[c]));
  }
  scale_state[r] = scale;
  zero_state[r] = zero;
}

__global__ void gptq_unpermute_codes_kernel(const uint8_t* __restrict__ codes_t, const int32_t* __restrict__ perm,
                                            int64_t rows, int64_t cols, uint8_t* __restrict__ codes) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * cols) return;
  const int64_t i = idx / rows, r = idx % rows;
  codes[r * cols + perm[i]] = codes_t[idx];
}

// dequantize(): scale · float(code − zero), one fp32 rounding (the product; the int difference
// converts exactly), the fp16 → fp32 scale conversion exact on both sides.
__global__ void gptq_dequantize_kernel(const uint8_t* __restrict__ codes, const uint16_t* __restrict__ scales,
                                       const uint8_t* __restrict__ zeros, const int32_t* __restrict__ g_idx,
                                       int64_t rows, int64_t cols, int64_t group_cols, int64_t n_groups,
                                       float* __restrict__ wq) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * cols) return;
  const int64_t r = idx / cols, c = idx % cols;
  const int64_t g = g_idx ? static_cast<int64_t>(g_idx[c]) : c / group_cols;
  const float scale = __half2float(__ushort_as_half(scales[r * n_groups + g]));
  const int level = static_cast<int>(codes[idx]) - static_cast<int>(zeros[r * n_groups + g]);
  wq[idx] = __fmul_rn(scale, static_cast<float>(level));
}

}  // namespace

void gptq_permute_transpose(const float* d_w, int64_t rows, int64_t cols, const int32_t* d_perm,
                            const uint8_t* d_dead, float* d_wt, cudaStream_t stream) {
  if (rows * cols <= 0) return;
  const dim3 grid(grid_for(cols, tile), grid_for(rows, tile));
  gptq_permute_transpose_kernel<<<grid, dim3(tile, 8), 0, stream>>>(d_w, rows, cols, d_perm, d_dead, d_wt);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

void gptq_block(float* d_wt, float* d_err, uint8_t* d_codes_t, float* d_scale, float* d_zero, uint16_t* d_scales,
                uint8_t* d_zeros, const float* d_u, int64_t rows, int64_t cols, int64_t b0, int64_t b1,
                int64_t group_cols, int bits, bool sym, cudaStream_t stream) {
  if (rows <= 0 || b1 <= b0) return;
  const int64_t n_groups = (cols + group_cols - 1) / group_cols;
  const float maxq = static_cast<float>((1 << bits) - 1);
  gptq_block_kernel<<<grid_for(rows, 128), 128, 0, stream>>>(d_wt, d_err, d_codes_t, d_scale, d_zero, d_scales,
                                                             d_zeros, d_u, rows, cols, b0, b1, group_cols, n_groups,
                                                             maxq, sym);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

void gptq_unpermute_codes(const uint8_t* d_codes_t, const int32_t* d_perm, int64_t rows, int64_t cols,
                          uint8_t* d_codes, cudaStream_t stream) {
  if (rows * cols <= 0) return;
  gptq_unpermute_codes_kernel<<<grid_for(rows * cols, 256), 256, 0, stream>>>(d_codes_t, d_perm, rows, cols, d_codes);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

void gptq_dequantize(const uint8_t* d_codes, const uint16_t* d_scales, const uint8_t* d_zeros,
                     const int32_t* d_g_idx, int64_t rows, int64_t cols, int64_t group_cols, float* d_wq,
                     cudaStream_t stream) {
  if (rows * cols <= 0) return;
  const int64_t n_groups = (cols + group_cols - 1) / group_cols;
  gptq_dequantize_kernel<<<grid_for(rows * cols, 256), 256, 0, stream>>>(d_codes, d_scales, d_zeros, d_g_idx, rows,
                                                                         cols, group_cols, n_groups, d_wq);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

}  // namespace shardq::cuda
