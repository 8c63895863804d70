// Relative output error of a quantized weight on the GPU, the definition and conventions of
// cpu::relative_output_error (kernels/cpu/quant_error.hpp):
//   tr(D H Dᵀ) / tr(W H Wᵀ),  D = W − Wq;  0 when both traces are 0, +inf when only the
//   denominator is.
//   quant_error_diff_kernel: D = W − Wq for a chunk of rows (fp32, as the CPU).
//   cublasSgemm (pedantic fp32): A·H for A = D, then A = W.
//   quant_error_dot_kernel: Σ A∘(AH) with each product and the sum in double, a fixed grid
//     of block partials summed on the host in order (deterministic run to run).
// Rows go in the output-error tiles of kernels/output_error.hpp (1024 rows; the temporaries
// are two tiles, 2 × 4 KiB · cols), each tile's pair summed from its block partials in order.
// Test: shardq_gpu_tests --gtest_filter='QuantErrorCuda*'.
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

#include "kernels/output_error.hpp"

namespace shardq::cuda {

// The traces of tiles [t0, t1) (kernels/output_error.hpp), one entry per tile: d_w, d_wq
// [rows, cols] row-major; d_h [cols, cols] full symmetric (both triangles are read, unlike
// the CPU tier, which reads the upper one). Runs on `stream` and synchronizes it. Throws
// shardq::error on a negative shape or tiles outside [0, output_error_tile_count(rows)).
std::vector<OutputErrorTraces> output_error_tiles_cuda(const float* d_w, const float* d_wq, const float* d_h,
                                                       int64_t rows, int64_t cols, int64_t t0, int64_t t1,
                                                       cudaStream_t stream);
// All tiles: relative_output_error_of(output_error_tiles_cuda(..., 0, count, stream)).
double relative_output_error_cuda(const float* d_w, const float* d_wq, const float* d_h, int64_t rows, int64_t cols,
                                  cudaStream_t stream);

// The kernels (kernels/cuda/quant_error.cu), on `stream`:
// d_d[i] = d_w[i] − d_wq[i] for i < n.
void quant_error_diff(const float* d_w, const float* d_wq, int64_t n, float* d_d, cudaStream_t stream);
// d_partials[b] for b < quant_error_blocks: block b's share of Σ_i double(a[i]) · double(ah[i]), i < n.
inline constexpr int quant_error_blocks = 256;
void quant_error_dot(const float* d_a, const float* d_ah, int64_t n, double* d_partials, cudaStream_t stream);

}  // namespace shardq::cuda
