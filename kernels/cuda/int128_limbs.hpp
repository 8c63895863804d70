// Exact sums of 128-bit fixed-point Hessians over a transport that only adds int64 (NCCL has
// no 128-bit reduction). Each value v is split into three limbs
//   v = l2 · 2^86 + l1 · 2^43 + l0,   l0, l1 ∈ [0, 2^43),  l2 = floor(v / 2^86) ∈ [-2^41, 2^41),
// so an int64 sum of each limb over fewer than 2^19 ranks cannot overflow; decoding propagates
// the carries and flags a total outside the int128 range. Integer addition is associative, so
// the reduced sums are bit-identical for any rank count and NCCL ring/tree order.
// (Alternative considered: ncclAllGather of the int128 words + a local add in rank order —
// exact as well, but size× the memory and traffic.)
//   int128_to_limbs_kernel, limbs_to_int128_kernel (one thread per value).
// CPU reference: the arithmetic definition above (tests compare with host int128 sums).
// Test: shardq_gpu_tests --gtest_filter='*Int128Limbs*:*NcclComm*'.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/cuda/hessian.cuh"

namespace shardq::cuda {

inline constexpr int int128_limb_bits = 43;
inline constexpr int int128_limbs = 3;
inline constexpr int int128_max_ranks = 1 << 19;

// d_limbs [3n], limb k of value i at d_limbs[k*n + i].
void int128_to_limbs(const hessian_int* d_values, std::size_t n, int64_t* d_limbs, cudaStream_t stream);
// Inverse after the limbs were summed; sets *d_overflow to 1 when a total leaves int128.
void limbs_to_int128(const int64_t* d_limbs, std::size_t n, hessian_int* d_values, unsigned* d_overflow,
                     cudaStream_t stream);

}  // namespace shardq::cuda
