// Limb encoding of 128-bit sums for int64-only reductions; see kernels/cuda/int128_limbs.hpp.
//   int128_to_limbs_kernel, limbs_to_int128_kernel
// Test: shardq_gpu_tests --gtest_filter='*Int128Limbs*'.
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/int128_limbs.hpp"

namespace shardq::cuda {
namespace {

using u128 = unsigned __int128;
constexpr int64_t limb_mask = (int64_t{1} << int128_limb_bits) - 1;

__global__ void int128_to_limbs_kernel(const hessian_int* __restrict__ values, std::size_t n, int64_t* __restrict__ limbs) {
  const std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const hessian_int v = values[i];
  limbs[i] = static_cast<int64_t>(static_cast<u128>(v) & limb_mask);
  limbs[n + i] = static_cast<int64_t>((static_cast<u128>(v) >> int128_limb_bits) & limb_mask);
  limbs[2 * n + i] = static_cast<int64_t>(v >> (2 * int128_limb_bits));  // arithmetic shift: floor
}

__global__ void limbs_to_int128_kernel(const int64_t* __restrict__ limbs, std::size_t n, hessian_int* __restrict__ values,
                                       unsigned* overflow) {
  const std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t s0 = limbs[i];
  const int64_t t1 = limbs[n + i] + (s0 >> int128_limb_bits);
  const int64_t t2 = limbs[2 * n + i] + (t1 >> int128_limb_bits);
  if (t2 < -(int64_t{1} << 41) || t2 >= (int64_t{1} << 41)) *overflow = 1u;
  const u128 bits = (static_cast<u128>(static_cast<hessian_int>(t2)) << (2 * int128_limb_bits)) +
                    (static_cast<u128>(t1 & limb_mask) << int128_limb_bits) + static_cast<u128>(s0 & limb_mask);
  values[i] = static_cast<hessian_int>(bits);
}

}  // namespace

void int128_to_limbs(const hessian_int* d_values, std::size_t n, int64_t* d_limbs, cudaStream_t stream) {
  if (n == 0) return;
  int128_to_limbs_kernel<<<grid_for(static_cast<int64_t>(n), 256), 256, 0, stream>>>(d_values, n, d_limbs);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

void limbs_to_int128(const int64_t* d_limbs, std::size_t n, hessian_int* d_values, unsigned* d_overflow,
                     cudaStream_t stream) {
  if (n == 0) return;
  limbs_to_int128_kernel<<<grid_for(static_cast<int64_t>(n), 256), 256, 0, stream>>>(d_limbs, n, d_values, d_overflow);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

}  // namespace shardq::cuda
