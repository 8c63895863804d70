// The GPTQ factor of H⁻¹ on the GPU (cuSOLVER), with the semantics of cpu::gptq_prepare
// (kernels/cpu/gptq.hpp): dead columns (H_ii == 0 → H_ii = 1, flagged), act-order perm =
// stable argsort of diag H descending, damping damp · mean(diag H) retried with 10x damping up
// to 4 times, U upper with H⁻¹ = UᵀU in permuted order. The decisions that need only diag H
// (dead, perm, mean) are the CPU tier's own code (cpu::gptq_order, cpu::gptq_damped_factor) run
// on the downloaded diagonal, so perm, dead and damp equal the CPU's; U agrees to fp32
// round-off (different Cholesky blockings).
//   gptq_hessian_scan_kernel: diag H and the first non-finite entry of the upper triangle.
//   gptq_factor_build_kernel: A = J · (P H Pᵀ + add·I) · J (permuted, damped, reversed).
//   cusolverDnXpotrf + cusolverDnXtrtri (64-bit API): one Cholesky and one triangular
//     inverse (the reversal trick of cpu::hinv_cholesky_upper; index algebra in
//     kernels/cuda/gptq_factor.cu).
//   gptq_factor_finish_kernel: U = J U₂⁻ᵀ J in place (a buffer reversal), zeros below the
//     diagonal, and the check that every U_ii is finite and > 0 (a failure → retry).
// Everything stays on the device: only diag H (cols floats) and status words cross to the host.
// Memory: U (cols² floats) plus cuSOLVER's workspace; H is read in place.
// Test: shardq_gpu_tests --gtest_filter='*GptqFactorCuda*'; benchmark: bench_gpu_gptq ("factor").
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

#include "kernels/cpu/gptq.hpp"
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/quant_types.hpp"

namespace shardq::cuda {

struct GptqFactorCuda {
  int64_t cols = 0;
  std::vector<int32_t> perm;  // host copies, as cpu::GptqFactor
  std::vector<uint8_t> dead;
  float damp = 0.0f;
  DeviceBuffer<int32_t> d_perm;  // [cols]
  DeviceBuffer<uint8_t> d_dead;  // [cols]
  DeviceBuffer<float> d_u;       // U [cols, cols] row-major upper (zeros below): H⁻¹ = UᵀU in permuted order

  // A QuantizedLinear of `rows` rows sized for this factor (cpu::gptq_make_output; no download).
  QuantizedLinear make_output(int64_t rows, const QuantConfig& cfg) const;
  // The whole factor on the host (downloads U: cols² floats; tests and host callers).
  cpu::GptqFactor to_host() const;
};

// d_h: the Hessian [cols, cols] fp32 on the device, row-major; only its upper triangle is read
// (as the CPU tier), so a full symmetric matrix or an upper-triangle one both work. Not modified.
// Runs on `stream` and synchronizes it (the retry decisions need the factorisation's status).
// Throws shardq::error (as cpu::gptq_prepare) on cols < 1, a non-finite entry, or a Hessian that
// is not positive definite even after the damping retries; shardq::cuda_error on CUDA failures.
GptqFactorCuda gptq_prepare_cuda(const float* d_h, int64_t cols, const QuantConfig& cfg, cudaStream_t stream);

// The kernels of gptq_prepare_cuda (kernels/cuda/gptq_factor.cu), all on `stream`:
// diag[i] = H_ii, and *d_first_bad = min(*d_first_bad, i*n + j) over non-finite H_ij with j >= i.
void gptq_hessian_scan(const float* d_h, int64_t n, float* d_diag, unsigned long long* d_first_bad,
                       cudaStream_t stream);
// d_a = J (P H Pᵀ + add·I) J with the dead-column fix (n×n; the upper triangle of H read).
void gptq_factor_build(const float* d_h, int64_t n, const int32_t* d_perm, const uint8_t* d_dead, float add,
                       float* d_a, cudaStream_t stream);
// d_a holding U₂⁻¹ (column-major upper) → U (row-major upper, zeros below);
// *d_first_bad = min(*d_first_bad, i) over U_ii not finite and > 0.
void gptq_factor_finish(float* d_a, int64_t n, unsigned long long* d_first_bad, cudaStream_t stream);

// A device copy of a host factor (e.g. the CPU tier's, so that both tiers run on the same U).
GptqFactorCuda gptq_factor_upload(const cpu::GptqFactor& factor, cudaStream_t stream);

}  // namespace shardq::cuda
