// GPTQ (Frantar et al. 2022, Algorithm 1; the reference IST-DASLab/gptq gptq.py fasterquant)
// on the CPU: dead columns, damping, optional act-order, the upper Cholesky factor U of H⁻¹,
// blocked lazy-batch updates with sgemm, group-wise grids (kernels/cpu/rtn.hpp).
//
// Semantics (what tests/unit/test_gptq.cpp pins against the unblocked double reference
// kernels/ref/gptq.cpp):
//   - H is read from its upper triangle (the Hessian accumulator fills that one).
//   - dead columns (H_ii == 0): H_ii = 1 and W[:, i] = 0 (they quantize to the zero point).
//   - act-order: perm = argsort(diag H) descending, stable (ties by column index); the
//     columns are processed in that order and g_idx[perm[i]] = i / group_size
//     (static_groups = False).
//   - damping damp * mean(diag H) (after the dead-column fix), retried with 10x damping up
//     to 4 times when the Cholesky factorisation fails.
//   - a group's grid is computed from the current (already error-updated) weights of its
//     columns when its first column is reached. This is the reference's behaviour whenever
//     groups start at block starts (group_size a multiple of block_size, the usual 128/128);
//     the reference reads stale, not yet lazily-updated columns for a group starting inside
//     a block, which would make results depend on block_size. Here they never do: the
//     pending updates of the current block are applied to the group's columns first.
//
// Determinism across ranks: rows are independent given U. They are processed in tiles of
// gptq_row_tile rows aligned to absolute row indices (tile t = rows [t*T, t*T+T)), every
// tile computed as a full T-row buffer (rows outside the requested range are zero), so the
// operations applied to a row, sgemm shapes included, are the same whichever range
// [r0, r1) a caller asks for. Splitting rows across ranks at any boundary therefore gives
// bit-identical integers and scales.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "common/tensor.hpp"
#include "kernels/quant_types.hpp"

namespace shardq::cpu {

inline constexpr int64_t gptq_row_tile = 128;

// Everything about H that GPTQ needs, shared by all rows (and all ranks).
struct GptqFactor {
  int64_t cols = 0;
  std::vector<int32_t> perm;     // perm[i]: original column processed i-th (identity without act-order)
  std::vector<uint8_t> dead;     // [cols] original order: H_ii == 0
  std::vector<float> hinv_chol;  // U [cols, cols] row-major, upper: H⁻¹ = UᵀU in permuted order
  float damp = 0.0f;             // relative damping that succeeded (cfg.damp or a 10x retry)
};

// Throws shardq::error when H is not [cols, cols], holds non-finite values, or is not
// positive definite even after the damping retries.
GptqFactor gptq_prepare(const Tensor& h, const QuantConfig& cfg);

// A QuantizedLinear of `rows` rows with every array sized and g_idx filled (act-order).
QuantizedLinear gptq_make_output(int64_t rows, const GptqFactor& factor, const QuantConfig& cfg);
// The same from the processing order alone (perm of a GptqFactor; no U needed).
QuantizedLinear gptq_make_output(int64_t rows, const std::vector<int32_t>& perm, const QuantConfig& cfg);

// The steps of gptq_prepare that need only diag H, shared with the GPU tier
// (kernels/cuda/gptq_factor.hpp) so that both tiers take the same decisions.
struct GptqOrder {
  std::vector<int32_t> perm;  // as GptqFactor::perm
  std::vector<uint8_t> dead;  // as GptqFactor::dead
  double diag_mean = 0.0;     // mean(diag H) after the dead-column fix, summed in processing order
};
// diag: diag H in original column order.
GptqOrder gptq_order(std::vector<float> diag, bool act_order);

// The damping schedule of gptq_prepare: calls factor(add) with add = float(damp · diag_mean)
// for damp = first_damp, then 10x (1e-4 after 0) up to 4 more times, until it returns 0 (its
// other results are LAPACK-style info codes). Returns the damp that succeeded; otherwise throws
// shardq::error "<what> is not positive definite even with damping ... (<library> info N)".
float gptq_damped_factor(float first_damp, double diag_mean, const std::function<int(float add)>& factor,
                         std::string_view what, std::string_view library);

// Quantizes rows [r0, r1) of w [rows, cols] into `out` (from gptq_make_output(rows, ...)):
// writes those rows of qweight, scales and zeros and nothing else.
void gptq_quantize_rows(const Tensor& w, const GptqFactor& factor, const QuantConfig& cfg,
                        int64_t r0, int64_t r1, QuantizedLinear& out);

// All rows: gptq_prepare + gptq_make_output + gptq_quantize_rows.
QuantizedLinear gptq_quantize(const Tensor& w, const Tensor& h, const QuantConfig& cfg);

// The in-block column loop of one lazy-batch block for one row tile (the part a CUDA tier
// replaces with its own kernel). The tile is stored transposed, column-major per row tile:
// wt[c * tile + k] is weight (permuted column c, tile row k). For each column j in [j0, j1)
// (inside the block [b0, b1)): codes = quant(w_j) on the grid (scale[k], zero[k]),
// err = (w_j - dequant) / U_jj, stored in err_block[(j - b0) * tile + k], and
// W[:, j+1:b1] -= err ⊗ U[j, j+1:b1].
void gptq_block_columns(float* wt, float* err_block, uint8_t* codes_t, const float* u, int64_t cols,
                        int64_t tile, int64_t b0, int64_t b1, int64_t j0, int64_t j1,
                        const float* scale, const float* zero, float maxq);

}  // namespace shardq::cpu
