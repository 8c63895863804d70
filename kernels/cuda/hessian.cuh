// Device side of the GPU Hessian accumulator (kernels/cuda/hessian.hpp): the conversion of an
// fp32 micro-batch partial to the CPU tier's 128-bit fixed-point sums. Plain C++17 types only,
// so both nvcc and the host compiler read it.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace shardq::cuda {

__extension__ typedef __int128 hessian_int;  // the same integer as cpu::hessian_int

// Error bits raised by hessian_fixed_point_add (atomicOr into *d_flags).
enum hessian_flag : unsigned {
  hessian_flag_nonfinite = 1u,  // inf/nan in the partial (layer input not finite)
  hessian_flag_range = 2u,      // |partial| ≥ 2^62: beyond the fixed-point range
  hessian_flag_overflow = 4u,   // the running sum left (-2^127, 2^127)
};

// d_sums[packed(i, j)] += trunc(P(i, j) · 2^64) for j ≥ i, bit for bit as
// cpu::hessian_fixed_point. P is the [dim, dim] partial in column-major order with its LOWER
// triangle filled (what cublasSsyrk(LOWER, N) of the row-major tokens leaves), so P(i, j),
// j ≥ i, is read at d_partial[j + i*dim]. packed(i, j) = i*dim - i*(i-1)/2 + (j - i).
void hessian_fixed_point_add(const float* d_partial, int64_t dim, hessian_int* d_sums, unsigned* d_flags,
                             cudaStream_t stream);

// d_h[i*dim + j] = d_h[j*dim + i] = (float)((double)d_sums[packed(i, j)] · scale), the
// conversions of cpu::HessianAccumulator::finalize (int128 → double rounds to nearest,
// then double → float); scale 0 gives zeros.
void hessian_finalize(const hessian_int* d_sums, int64_t dim, double scale, float* d_h, cudaStream_t stream);

}  // namespace shardq::cuda
