// GPTQ factor on the GPU, device half; the contract is in kernels/cuda/gptq_factor.hpp, the
// host driver (cuSOLVER calls, retries) in kernels/cuda/gptq_factor.cpp.
//   gptq_hessian_scan_kernel, gptq_factor_build_kernel, gptq_factor_finish_kernel
// CPU reference: cpu::gptq_prepare / hinv_cholesky_upper (kernels/cpu/gptq.cpp).
// Test: shardq_gpu_tests --gtest_filter='*GptqFactorCuda*'.
//
// Index algebra of the reversal trick (n = cols, J the reversal permutation, Hd = P H Pᵀ + add·I):
//   build:  a[i*n + j] = Hd[n-1-i][n-1-j], i.e. A = J Hd J. A is symmetric, so the buffer reads
//           the same row-major or column-major.
//   potrf:  cuSOLVER (column-major, CUBLAS_FILL_MODE_UPPER) writes U₂ with A = U₂ᵀU₂ into the
//           upper triangle of the column-major buffer: U₂[r][c] at a[c*n + r], r <= c.
//   trtri:  V = U₂⁻¹, in place, same storage: V[r][c] at a[c*n + r], r <= c.
//   Then Hd = J U₂ᵀU₂ J = R Rᵀ with R = J U₂ᵀ J upper, so Hd⁻¹ = R⁻ᵀR⁻¹ and the upper
//   Cholesky factor of Hd⁻¹ is U = R⁻¹ = J U₂⁻ᵀ J = J Vᵀ J (upper, positive diagonal: unique):
//           U[i][j] = V[n-1-j][n-1-i] = a[(n-1-i)*n + (n-1-j)] = a[n² - 1 - (i*n + j)],
//   so the row-major U is the whole buffer reversed (the finish kernel's swap). The entries
//   with i > j come from a[c*n + r] with r > c, the column-major lower triangle that potrf and
//   trtri leave holding A: they are zeroed.
#include <cstdint>

#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/gptq_factor.hpp"

namespace shardq::cuda {
namespace {

// Not NaN and not ±inf.
__device__ inline bool finite_f32(float v) { return fabsf(v) <= 3.402823466e+38f; }

__global__ void gptq_hessian_scan_kernel(const float* __restrict__ h, int64_t n, float* __restrict__ diag,
                                         unsigned long long* __restrict__ first_bad) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * n) return;
  const int64_t i = idx / n, j = idx % n;
  const float v = h[idx];
  if (j >= i && !finite_f32(v)) atomicMin(first_bad, static_cast<unsigned long long>(idx));
  if (i == j) diag[i] = v;
}

// The upper triangle is read (h[min*n + max]), as cpu::gptq_prepare reads it. The diagonal
// gets the dead-column fix and the damping in the CPU's fp32 order: (H_ii or 1) + add.
__global__ void gptq_factor_build_kernel(const float* __restrict__ h, int64_t n, const int32_t* __restrict__ perm,
                                         const uint8_t* __restrict__ dead, float add, float* __restrict__ a) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * n) return;
  const int64_t i = idx / n, j = idx % n;
  const int64_t p = perm[n - 1 - i], q = perm[n - 1 - j];
  const int64_t lo = p < q ? p : q, hi = p < q ? q : p;
  float v = h[lo * n + hi];
  if (p == q) v = __fadd_rn(dead[p] ? 1.0f : v, add);
  a[idx] = v;
}

// Stores U[x / n][x % n] = v: zero below the diagonal; a diagonal entry that is not finite and
// positive records its row in first_bad (the CPU's check: a failure the damping retries).
__device__ inline void store_u(float* a, int64_t x, float v, int64_t n, unsigned long long* first_bad) {
  const int64_t i = x / n, j = x % n;
  if (i > j) v = 0.0f;
  if (i == j && !(finite_f32(v) && v > 0.0f)) atomicMin(first_bad, static_cast<unsigned long long>(i));
  a[x] = v;
}

// Thread t swaps a[t] and a[n²-1-t] (t < ceil(n²/2); the middle element of an odd n², a
// diagonal one, maps to itself).
__global__ void gptq_factor_finish_kernel(float* __restrict__ a, int64_t n, unsigned long long* __restrict__ first_bad) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nn = n * n;
  if (t >= (nn + 1) / 2) return;
  const int64_t s = nn - 1 - t;
  const float at = a[t], as = a[s];
  store_u(a, t, as, n, first_bad);
  if (s != t) store_u(a, s, at, n, first_bad);
}

}  // namespace

void gptq_hessian_scan(const float* d_h, int64_t n, float* d_diag, unsigned long long* d_first_bad,
                       cudaStream_t stream) {
  if (n <= 0) return;
  gptq_hessian_scan_kernel<<<grid_for(n * n, 256), 256, 0, stream>>>(d_h, n, d_diag, d_first_bad);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

void gptq_factor_build(const float* d_h, int64_t n, const int32_t* d_perm, const uint8_t* d_dead, float add,
                       float* d_a, cudaStream_t stream) {
  if (n <= 0) return;
  gptq_factor_build_kernel<<<grid_for(n * n, 256), 256, 0, stream>>>(d_h, n, d_perm, d_dead, add, d_a);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

void gptq_factor_finish(float* d_a, int64_t n, unsigned long long* d_first_bad, cudaStream_t stream) {
  if (n <= 0) return;
  gptq_factor_finish_kernel<<<grid_for((n * n + 1) / 2, 256), 256, 0, stream>>>(d_a, n, d_first_bad);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

}  // namespace shardq::cuda
