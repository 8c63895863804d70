// GPTQ on the GPU, device half; the algorithm, mapping and contract are in kernels/cuda/gptq.hpp.
//   gptq_permute_transpose_kernel, gptq_block_kernel, gptq_lazy_update_kernel,
//   gptq_unpermute_codes_kernel, gptq_dequantize_kernel
// CPU reference: kernels/cpu/gptq.cpp (gptq_block_columns, group_params, the lazy-batch gemm of
// gptq_quantize_rows), kernels/quantize.cpp (dequantize); the lazy update's exact summation
// order is held to a sequential std::fma loop in the test;
// the host driver is kernels/cuda/gptq.cpp. Test: shardq_gpu_tests --gtest_filter='*GptqCuda*:*GptqDevice*';
// benchmark: build-cuda/bench/bench_gpu_gptq.
#include <cstdint>

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
  // A block that starts a group sets its grid at j = b0; only one inside a group continues the
  // previous block's (the first block's state is never written before, compute-sanitizer
  // initcheck flags reading it).
  float scale = 0.0f, zero = 0.0f;
  if (b0 % group_cols != 0) {
    scale = scale_state[r];
    zero = zero_state[r];
  }
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

// The lazy-batch update, an sgemm with one fixed summation order (see gptq_lazy_update in
// gptq.hpp for why not cuBLAS): each element is W − Σ_k Err[:, k]·U[b0+k, c], the sum taken
// by fmaf in ascending k from +0, then one rounded subtraction (the CPU tier's sgemm rounding
// model with alpha = −1, beta = 1). Tiling is the classic register-blocked one: 128 × 128
// outputs per 256-thread block, 8 × 8 per thread as two 4-wide strips in each direction (a
// warp's float4 shared-memory reads are then conflict-free), k staged through double-buffered
// shared memory 8 at a time with the next step's global loads issued before the current
// step's products. The tiling only decides which thread computes an element, never the order
// of its sum, so an element's bits do not depend on the row count or on the tile it lands in.
constexpr int update_tile = 128, update_k = 8, update_threads = 256;
constexpr int update_loads = update_k * update_tile / update_threads;  // per thread and operand

__global__ void __launch_bounds__(update_threads, 2)
    gptq_lazy_update_kernel(float* __restrict__ wt, const float* __restrict__ err, const float* __restrict__ u,
                            int64_t rows, int64_t cols, int64_t b0, int64_t b1, bool vector_rows) {
  __shared__ __align__(16) float err_s[2][update_k][update_tile];
  __shared__ __align__(16) float u_s[2][update_k][update_tile];
  const int64_t k_len = b1 - b0, n_len = cols - b1;
  const int64_t r_tile = static_cast<int64_t>(blockIdx.x) * update_tile;
  const int64_t c_tile = static_cast<int64_t>(blockIdx.y) * update_tile;
  const int t = static_cast<int>(threadIdx.x), tx = t % 16, ty = t / 16;

  // Global → registers → shared, coalesced: load l of thread t is element (k0 + idx / 128,
  // tile + idx % 128) of Err and of U's panel, zero outside the matrices.
  float err_r[update_loads], u_r[update_loads];
  const auto fetch = [&](int64_t k0) {
#pragma unroll
    for (int l = 0; l < update_loads; ++l) {
      const int idx = t + l * update_threads;
      const int64_t k = k0 + idx / update_tile, r = r_tile + idx % update_tile, c = c_tile + idx % update_tile;
      err_r[l] = (k < k_len && r < rows) ? err[k * rows + r] : 0.0f;
      u_r[l] = (k < k_len && c < n_len) ? u[(b0 + k) * cols + b1 + c] : 0.0f;
    }
  };
  const auto stash = [&](int stage) {
#pragma unroll
    for (int l = 0; l < update_loads; ++l) {
      const int idx = t + l * update_threads;
      err_s[stage][idx / update_tile][idx % update_tile] = err_r[l];
      u_s[stage][idx / update_tile][idx % update_tile] = u_r[l];
    }
  };

  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

  fetch(0);
  stash(0);
  __syncthreads();
  int stage = 0;
  for (int64_t k0 = 0; k0 < k_len; k0 += update_k) {
    const bool more = k0 + update_k < k_len;
    if (more) fetch(k0 + update_k);
    // Exactly the k < k_len terms: a padded fmaf(0, 0, −0) would turn a −0 sum into +0.
    const int64_t steps = more ? update_k : k_len - k0;
#pragma unroll
    for (int kk = 0; kk < update_k; ++kk) {
      if (kk < steps) {
        const float4 a0 = *reinterpret_cast<const float4*>(&err_s[stage][kk][tx * 4]);
        const float4 a1 = *reinterpret_cast<const float4*>(&err_s[stage][kk][64 + tx * 4]);
        const float4 v0 = *reinterpret_cast<const float4*>(&u_s[stage][kk][ty * 4]);
        const float4 v1 = *reinterpret_cast<const float4*>(&u_s[stage][kk][64 + ty * 4]);
        const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        const float b[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
    if (more) stash(stage ^ 1);  // the other stage was last read before the previous barrier
    __syncthreads();
    stage ^= 1;
  }

  // Thread (tx, ty) holds rows r_tile + {0, 64} + 4·tx + [0, 4) of columns c_tile + {0, 64} +
  // 4·ty + [0, 4); a column's 4 rows are one aligned float4 when vector_rows (the launcher's
  // rows % 4 == 0 and wt 16-byte aligned).
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int64_t c = c_tile + (j / 4) * 64 + ty * 4 + j % 4;
    if (c >= n_len) continue;
    float* column = wt + (b1 + c) * rows;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = r_tile + h * 64 + tx * 4;
      if (r >= rows) continue;
      if (vector_rows) {
        float4 v = *reinterpret_cast<float4*>(column + r);
        v.x = __fsub_rn(v.x, acc[h * 4 + 0][j]);
        v.y = __fsub_rn(v.y, acc[h * 4 + 1][j]);
        v.z = __fsub_rn(v.z, acc[h * 4 + 2][j]);
        v.w = __fsub_rn(v.w, acc[h * 4 + 3][j]);
        *reinterpret_cast<float4*>(column + r) = v;
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i)
          if (r + i < rows) column[r + i] = __fsub_rn(column[r + i], acc[h * 4 + i][j]);
      }
    }
  }
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

void gptq_lazy_update(float* d_wt, const float* d_err, const float* d_u, int64_t rows, int64_t cols, int64_t b0,
                      int64_t b1, cudaStream_t stream) {
  if (b0 < 0) detail::throw_message("gptq_lazy_update (cuda): negative block start", __FILE__, __LINE__);
  if (rows <= 0 || b1 <= b0 || b1 >= cols) return;
  const bool vector_rows = rows % 4 == 0 && reinterpret_cast<std::uintptr_t>(d_wt) % 16 == 0;
  const int64_t col_tiles = (cols - b1 + update_tile - 1) / update_tile;
  if (col_tiles > 65535)
    detail::throw_message("gptq_lazy_update (cuda): more than 65535 column tiles past the block", __FILE__, __LINE__);
  const dim3 grid(grid_for(rows, update_tile), static_cast<unsigned>(col_tiles));
  gptq_lazy_update_kernel<<<grid, update_threads, 0, stream>>>(d_wt, d_err, d_u, rows, cols, b0, b1, vector_rows);
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
