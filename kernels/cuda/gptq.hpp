// GPTQ (Frantar et al. 2022, Algorithm 1) on the GPU with the semantics of the CPU tier
// (kernels/cpu/gptq.hpp: dead columns, damping and its retries, act-order with g_idx, group
// grids taken from the error-updated weights when a group's first column is reached, also
// for groups starting inside a block). Weights, factor and outputs stay on the device; one
// code path (gptq_quantize_rows_device) serves the host entry points too.
//   H⁻¹ factor: gptq_prepare_cuda (kernels/cuda/gptq_factor.hpp, cuSOLVER), shared by all
//     rows and by q/k/v and gate/up.
//   gptq_permute_transpose_kernel: W → Wt [cols, rows] in act-order, dead columns zeroed
//     (column-major per row so that the one-thread-per-row kernel below reads coalesced).
//   gptq_block_kernel: the in-block column loop of cpu::gptq_block_columns plus the group
//     grids, one thread per row (rows are independent given U): quantize column j on the
//     group grid, err = (w - q) / U_jj, W[:, j+1:b1] -= err ⊗ U[j, j+1:b1] (eq. 3 / Alg. 1).
//   gptq_lazy_update_kernel: the lazy-batch update W[:, b1:] -= Err · U[b0:b1, b1:], an own
//     sgemm whose every element is summed in one fixed order (gptq_lazy_update below).
//   gptq_unpermute_codes_kernel + pack_codes: codes back to column order, packed.
//   gptq_dequantize_kernel: the dequantized rows (kernels/quantize.cpp dequantize's formula,
//     bit for bit), what the next layer's forward and the output error use.
// The codes equal the CPU tier's except where the two summation orders of the lazy update (and, with
// gptq_prepare_cuda, the two Cholesky blockings of U) round a value across a rounding tie of
// the grid (tests require ≥ 99.9 % equal codes, a row's first difference ±1).
// Test: shardq_gpu_tests --gtest_filter='*GptqCuda*:*GptqDevice*'; benchmark: bench_gpu_gptq.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "common/tensor.hpp"
#include "kernels/cpu/gptq.hpp"
#include "kernels/cuda/gptq_factor.hpp"
#include "kernels/quant_types.hpp"

namespace shardq::cuda {

// d_wt[i*rows + r] = dead[perm[i]] ? 0 : d_w[r*cols + perm[i]].
void gptq_permute_transpose(const float* d_w, int64_t rows, int64_t cols, const int32_t* d_perm,
                            const uint8_t* d_dead, float* d_wt, cudaStream_t stream);
// One lazy-batch block [b0, b1) for all rows: updates d_wt inside the block, writes
// d_err [(j-b0)*rows + r], d_codes_t [j*rows + r], and at every group start the row's grid
// (d_scale/d_zero, kept across blocks) and its stored form d_scales (fp16 bits) / d_zeros
// [rows, n_groups]. d_u is U [cols, cols] row-major.
void gptq_block(float* d_wt, float* d_err, uint8_t* d_codes_t, float* d_scale, float* d_zero, uint16_t* d_scales,
                uint8_t* d_zeros, const float* d_u, int64_t rows, int64_t cols, int64_t b0, int64_t b1,
                int64_t group_cols, int bits, bool sym, cudaStream_t stream);
// The lazy-batch update of block [b0, b1) (Algorithm 1's W[:, b1:] -= Err · H⁻¹[b0:b1, b1:]) in
// the transposed layout: for c in [b1, cols) and every row r,
//   d_wt[c*rows + r] -= Σ_{k < b1-b0} d_err[k*rows + r] · d_u[(b0+k)*cols + c],
// the sum accumulated with fmaf in ascending k from +0 and subtracted once (the CPU sgemm's
// rounding model with alpha = −1, beta = 1). Own kernel rather than cublasSgemm: cuBLAS picks
// its kernel (tile shape, split-K or stream-K reduction) by problem size and GPU, so a row's
// bits could depend on how many rows the call holds, i.e. on the number of ranks the job's
// row split (gptq_rank_rows) gives, and on the GPU model; here they depend on neither
// (IEEE fma is exact-then-rounded everywhere). Nothing to do when b1 >= cols; throws
// shardq::cuda_error for b0 < 0 or more than 65535 × 128 columns past the block.
void gptq_lazy_update(float* d_wt, const float* d_err, const float* d_u, int64_t rows, int64_t cols, int64_t b0,
                      int64_t b1, cudaStream_t stream);
// d_codes[r*cols + perm[i]] = d_codes_t[i*rows + r].
void gptq_unpermute_codes(const uint8_t* d_codes_t, const int32_t* d_perm, int64_t rows, int64_t cols,
                          uint8_t* d_codes, cudaStream_t stream);

// d_wq[r*cols + c] = fp16→fp32(d_scales[r*n_groups + g]) · (d_codes[r*cols + c] − d_zeros[r*n_groups + g])
// with g = d_g_idx[c] when d_g_idx is not null, else c / group_cols: dequantize()'s formula.
void gptq_dequantize(const uint8_t* d_codes, const uint16_t* d_scales, const uint8_t* d_zeros,
                     const int32_t* d_g_idx, int64_t rows, int64_t cols, int64_t group_cols, float* d_wq,
                     cudaStream_t stream);

// cpu::gptq_quantize_rows on the device: rows [r0, r1) of the device weight d_w [rows, cols]
// (row-major, unchanged) into `out` (from f.make_output(rows, cfg)): writes those rows of
// qweight, scales and zeros and nothing else. When d_wq is not null it also writes rows
// [r0, r1) of the [rows, cols] row-major device buffer d_wq with the dequantized weights,
// equal bit for bit to those rows of dequantize(out); a row's results do not depend on
// [r0, r1) (gptq_lazy_update). Runs on `stream` and synchronizes it before returning (out is host memory). Throws shardq::error on a
// mismatched output, config or row range.
void gptq_quantize_rows_device(const float* d_w, int64_t rows, const GptqFactorCuda& f, const QuantConfig& cfg,
                               int64_t r0, int64_t r1, QuantizedLinear& out, float* d_wq, cudaStream_t stream);

// Host weights and a host factor (e.g. the CPU tier's): uploads the factor and rows [r0, r1)
// of w, then gptq_quantize_rows_device; the contract of cpu::gptq_quantize_rows.
void gptq_quantize_rows_cuda(const Tensor& w, const cpu::GptqFactor& factor, const QuantConfig& cfg, int64_t r0,
                             int64_t r1, QuantizedLinear& out);
// All rows from host tensors: gptq_prepare_cuda + make_output + gptq_quantize_rows_device.
QuantizedLinear gptq_quantize_cuda(const Tensor& w, const Tensor& h, const QuantConfig& cfg);

}  // namespace shardq::cuda
