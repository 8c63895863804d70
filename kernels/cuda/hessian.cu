// GPU Hessian accumulation, device half: fp32 partial → 128-bit fixed-point sums.
//   kernel hessian_fixed_point_add_kernel: one thread per packed upper-triangle entry of one
//          row i (blockIdx.y), reading the column-major lower partial contiguously and writing
//          the row-major packed sums contiguously.
// CPU reference: kernels/cpu/hessian.cpp (hessian_fixed_point, HessianAccumulator::add);
// the host class is kernels/cuda/hessian.cpp. Test: shardq_gpu_tests --gtest_filter='*HessianCuda*';
//   kernel hessian_finalize_kernel: packed sums → full symmetric fp32 H.
// benchmark: bench_gpu_gptq (accumulation is timed as part of nothing yet; see the report).
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/hessian.cuh"

namespace shardq::cuda {
namespace {

// trunc(p · 2^64) exactly as cpu::hessian_fixed_point (same bit manipulation, same limits).
__device__ hessian_int fixed_point(float p, unsigned* flags) {
  const unsigned bits = __float_as_uint(p);
  const int exponent = static_cast<int>((bits >> 23) & 0xffu);
  if (exponent == 0xff) {
    atomicOr(flags, static_cast<unsigned>(hessian_flag_nonfinite));
    return 0;
  }
  if (exponent == 0) return 0;
  const unsigned long long mantissa = (bits & 0x7fffffu) | 0x800000u;
  const int shift = exponent - 150 + 64;
  hessian_int magnitude = 0;
  if (shift >= 0) {
    if (shift > 102) {
      atomicOr(flags, static_cast<unsigned>(hessian_flag_range));
      return 0;
    }
    magnitude = static_cast<hessian_int>(mantissa) << shift;
  } else if (shift > -24) {
    magnitude = static_cast<hessian_int>(mantissa >> -shift);
  }
  return (bits >> 31) ? -magnitude : magnitude;
}

__global__ void hessian_fixed_point_add_kernel(const float* __restrict__ partial, int64_t dim,
                                               hessian_int* __restrict__ sums, unsigned* flags) {
  const int64_t i = blockIdx.y;
  const int64_t j = i + static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= dim) return;
  const hessian_int add = fixed_point(partial[j + i * dim], flags);
  hessian_int* s = sums + (i * dim - i * (i - 1) / 2 + (j - i));
  // Two's-complement add with the overflow test of __builtin_add_overflow (not in device code).
  using u128 = unsigned __int128;
  const hessian_int old = *s;
  const hessian_int sum = static_cast<hessian_int>(static_cast<u128>(old) + static_cast<u128>(add));
  if ((old < 0) == (add < 0) && (sum < 0) != (old < 0)) atomicOr(flags, static_cast<unsigned>(hessian_flag_overflow));
  *s = sum;
}

// One thread per packed entry of row i (blockIdx.y): both halves of the symmetric matrix.
__global__ void hessian_finalize_kernel(const hessian_int* __restrict__ sums, int64_t dim, double scale,
                                        float* __restrict__ h) {
  const int64_t i = blockIdx.y;
  const int64_t j = i + static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= dim) return;
  const float value = static_cast<float>(static_cast<double>(sums[i * dim - i * (i - 1) / 2 + (j - i)]) * scale);
  h[i * dim + j] = value;
  h[j * dim + i] = value;
}

// One block row per Hessian row: gridDim.y is at most 65535 (Llama-3-405B's largest input,
// its MLP's 53248, fits).
void check_grid_rows(int64_t dim) {
  if (dim > 65535) detail::throw_message("hessian (cuda): dims above 65535 are not supported", __FILE__, __LINE__);
}

}  // namespace

void hessian_finalize(const hessian_int* d_sums, int64_t dim, double scale, float* d_h, cudaStream_t stream) {
  if (dim <= 0) return;
  constexpr int threads = 256;
  check_grid_rows(dim);
  const dim3 grid(grid_for(dim, threads), static_cast<unsigned>(dim));
  hessian_finalize_kernel<<<grid, threads, 0, stream>>>(d_sums, dim, scale, d_h);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

void hessian_fixed_point_add(const float* d_partial, int64_t dim, hessian_int* d_sums, unsigned* d_flags,
                             cudaStream_t stream) {
  if (dim <= 0) return;
  constexpr int threads = 256;
  check_grid_rows(dim);
  const dim3 grid(grid_for(dim, threads), static_cast<unsigned>(dim));
  hessian_fixed_point_add_kernel<<<grid, threads, 0, stream>>>(d_partial, dim, d_sums, d_flags);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

}  // namespace shardq::cuda
