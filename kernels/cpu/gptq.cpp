// GPTQ on the CPU: factorisation of H⁻¹ (LAPACK) and blocked lazy-batch quantization of row
// tiles (sgemm for the updates past a block). Semantics and determinism: gptq.hpp.
#include "kernels/cpu/gptq.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include <fmt/format.h>

#include "common/dtype.hpp"
#include "common/error.hpp"
#include "kernels/cpu/blas.hpp"
#include "kernels/cpu/pack.hpp"
#include "kernels/cpu/rtn.hpp"
#include "kernels/quantize.hpp"

namespace shardq::cpu {
namespace {

constexpr int damp_retries = 4;

// U with H⁻¹ = UᵀU from H (n×n, row-major, damped) at the cost of one Cholesky and one
// triangular inverse instead of the reference's cholesky → cholesky_inverse → cholesky:
// with J the reversal permutation, J H J = U₂ᵀU₂ gives H = R Rᵀ for the upper triangular
// R = J U₂ᵀ J, hence H⁻¹ = R⁻ᵀ R⁻¹ and U = R⁻¹ = J U₂⁻ᵀ J (upper, positive diagonal, so it
// is the Cholesky factor by uniqueness). Reversing a row-major buffer is J · J.
// Returns the LAPACK info (0 on success).
int hinv_cholesky_upper(int64_t n, const std::vector<float>& h, std::vector<float>& u) {
  std::vector<float> a(h.rbegin(), h.rend());
  int info = cholesky_upper(n, a.data());
  if (info != 0) return info;
  info = triangular_inverse_upper(n, a.data());
  if (info != 0) return info;
  u.assign(static_cast<size_t>(n * n), 0.0f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) u[i * n + j] = a[(n - 1 - j) * n + (n - 1 - i)];
  for (int64_t i = 0; i < n; ++i)
    if (!(u[i * n + i] > 0.0f) || !std::isfinite(u[i * n + i])) return static_cast<int>(i + 1);
  return 0;
}

int64_t group_cols_of(const QuantConfig& cfg, int64_t cols) {
  return cfg.group_size > 0 ? cfg.group_size : cols;
}

// Grid of the group starting at permuted column j for every tile row. Columns inside the
// block are current in wt; columns at or past b1 still lack the pending updates of columns
// [b0, j) of this block, which are applied to a copy first (see gptq.hpp on groups).
void group_params(const float* wt, const float* err_block, const float* u, int64_t cols, int64_t tile,
                  int64_t b0, int64_t b1, int64_t j, int64_t g_end, const QuantConfig& cfg,
                  std::vector<float>& scale, std::vector<float>& zero, std::vector<float>& col) {
  std::vector<float> mn(static_cast<size_t>(tile), INFINITY), mx(static_cast<size_t>(tile), -INFINITY);
  for (int64_t c = j; c < g_end; ++c) {
    const float* v = wt + c * tile;
    if (c >= b1 && j > b0) {
      std::copy(v, v + tile, col.begin());
      for (int64_t m = b0; m < j; ++m) {
        const float um = u[m * cols + c];
        const float* e = err_block + (m - b0) * tile;
        for (int64_t k = 0; k < tile; ++k) col[k] -= e[k] * um;
      }
      v = col.data();
    }
    for (int64_t k = 0; k < tile; ++k) {
      mn[k] = std::min(mn[k], v[k]);
      mx[k] = std::max(mx[k], v[k]);
    }
  }
  for (int64_t k = 0; k < tile; ++k) {
    const GridParams p = grid_find_params(mn[k], mx[k], cfg.bits, cfg.sym);
    scale[k] = p.scale;
    zero[k] = p.zero;
  }
}

}  // namespace

GptqOrder gptq_order(std::vector<float> diag, bool act_order) {
  const auto n = static_cast<int64_t>(diag.size());
  GptqOrder o;
  o.dead.assign(diag.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    if (diag[i] == 0.0f) {
      o.dead[i] = 1;
      diag[i] = 1.0f;
    }
  }
  o.perm.resize(diag.size());
  std::iota(o.perm.begin(), o.perm.end(), 0);
  if (act_order)
    std::stable_sort(o.perm.begin(), o.perm.end(), [&](int32_t a, int32_t b) { return diag[a] > diag[b]; });
  double diag_sum = 0.0;
  for (int64_t i = 0; i < n; ++i) diag_sum += diag[o.perm[i]];
  o.diag_mean = diag_sum / static_cast<double>(n);
  return o;
}

float gptq_damped_factor(float first_damp, double diag_mean, const std::function<int(float add)>& factor,
                         std::string_view what, std::string_view library) {
  float damp = first_damp;
  int info = 0;
  for (int attempt = 0; attempt <= damp_retries; ++attempt) {
    info = factor(static_cast<float>(damp * diag_mean));
    if (info == 0) return damp;
    damp = damp > 0.0f ? damp * 10.0f : 1e-4f;
  }
  throw error(fmt::format("{} is not positive definite even with damping {} x mean(diag H) ({} info {}); the "
                          "calibration data may be degenerate",
                          what, damp / 10.0f, library, info));
}

GptqFactor gptq_prepare(const Tensor& h, const QuantConfig& cfg) {
  quant_config_check(cfg);
  const int64_t n = h.rows();
  if (h.shape.size() != 2 || h.cols() != n || n < 1)
    throw error(fmt::format("gptq: Hessian must be square, got {}", shape_string(h.shape)));
  std::vector<float> hs(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i; j < n; ++j) {
      const float v = h.at(i, j);
      if (!std::isfinite(v))
        throw error(fmt::format("gptq: Hessian {} has a non-finite value at ({}, {})", shape_string(h.shape), i, j));
      hs[i * n + j] = v;
      hs[j * n + i] = v;
    }
  }
  std::vector<float> diag(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) diag[i] = hs[i * n + i];
  GptqOrder order = gptq_order(std::move(diag), cfg.act_order);
  for (int64_t i = 0; i < n; ++i)
    if (order.dead[i]) hs[i * n + i] = 1.0f;
  std::vector<float> hp(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) hp[i * n + j] = hs[order.perm[i] * n + order.perm[j]];

  GptqFactor f;
  f.cols = n;
  f.damp = gptq_damped_factor(
      cfg.damp, order.diag_mean,
      [&](float add) {
        std::vector<float> hd = hp;
        for (int64_t i = 0; i < n; ++i) hd[i * n + i] += add;
        return hinv_cholesky_upper(n, hd, f.hinv_chol);
      },
      fmt::format("gptq: Hessian {}", shape_string(h.shape)), "LAPACK");
  f.perm = std::move(order.perm);
  f.dead = std::move(order.dead);
  return f;
}

QuantizedLinear gptq_make_output(int64_t rows, const std::vector<int32_t>& perm, const QuantConfig& cfg) {
  const auto cols = static_cast<int64_t>(perm.size());
  QuantizedLinear q = quantized_linear_alloc(quant_method::gptq, rows, cols, cfg.bits, cfg.group_size, cfg.sym, true);
  if (cfg.act_order) {
    const int64_t gcols = group_cols_of(cfg, cols);
    q.g_idx.resize(static_cast<size_t>(cols));
    for (int64_t i = 0; i < cols; ++i) q.g_idx[perm[i]] = static_cast<int32_t>(i / gcols);
  }
  return q;
}

QuantizedLinear gptq_make_output(int64_t rows, const GptqFactor& factor, const QuantConfig& cfg) {
  return gptq_make_output(rows, factor.perm, cfg);
}

void gptq_block_columns(float* wt, float* err_block, uint8_t* codes_t, const float* u, int64_t cols,
                        int64_t tile, int64_t b0, int64_t b1, int64_t j0, int64_t j1,
                        const float* scale, const float* zero, float maxq) {
  for (int64_t j = j0; j < j1; ++j) {
    const float d = u[j * cols + j];
    float* w = wt + j * tile;
    float* e = err_block + (j - b0) * tile;
    uint8_t* code = codes_t + j * tile;
    for (int64_t k = 0; k < tile; ++k) {
      const float q = grid_quantize(w[k], scale[k], zero[k], maxq);
      code[k] = static_cast<uint8_t>(q);
      e[k] = (w[k] - grid_dequantize(q, scale[k], zero[k])) / d;
    }
    for (int64_t c = j + 1; c < b1; ++c) {
      const float uc = u[j * cols + c];
      float* wc = wt + c * tile;
      for (int64_t k = 0; k < tile; ++k) wc[k] -= e[k] * uc;
    }
  }
}

void gptq_quantize_rows(const Tensor& w, const GptqFactor& factor, const QuantConfig& cfg,
                        int64_t r0, int64_t r1, QuantizedLinear& out) {
  quant_config_check(cfg);
  const int64_t rows = w.rows(), cols = factor.cols;
  if (w.shape.size() != 2 || w.cols() != cols)
    throw error(fmt::format("gptq: weight {} does not match the Hessian's {} columns", shape_string(w.shape), cols));
  if (out.rows != rows || out.cols != cols || out.bits != cfg.bits ||
      static_cast<int64_t>(out.scales.size()) != rows * out.n_groups())
    throw error("gptq: output was not made by gptq_make_output for this weight and config");
  if (r0 < 0 || r1 > rows || r0 > r1)
    throw error(fmt::format("gptq: row range [{}, {}) outside [0, {})", r0, r1, rows));
  if (r0 == r1) return;

  constexpr int64_t tile = gptq_row_tile;
  const int64_t gcols = group_cols_of(cfg, cols), n_groups = out.n_groups(), wpr = out.words_per_row();
  const int64_t block = cfg.block_size;
  const float maxq = grid_maxq(cfg.bits);
  const float* u = factor.hinv_chol.data();

  std::vector<float> wt(static_cast<size_t>(cols * tile));
  std::vector<float> err_block(static_cast<size_t>(block * tile));
  std::vector<uint8_t> codes_t(static_cast<size_t>(cols * tile));
  std::vector<float> scale(tile), zero(tile), col(tile);
  std::vector<uint8_t> row_codes(static_cast<size_t>(cols));

  for (int64_t t0 = (r0 / tile) * tile; t0 < r1; t0 += tile) {
    const int64_t v0 = std::max(r0, t0), v1 = std::min(r1, t0 + tile);
    std::fill(wt.begin(), wt.end(), 0.0f);
    for (int64_t r = v0; r < v1; ++r) {
      const float* src = w.ptr() + r * cols;
      for (int64_t i = 0; i < cols; ++i) {
        const int32_t c = factor.perm[i];
        wt[i * tile + (r - t0)] = factor.dead[c] ? 0.0f : src[c];
      }
    }
    for (int64_t b0 = 0; b0 < cols; b0 += block) {
      const int64_t b1 = std::min(cols, b0 + block);
      for (int64_t j = b0; j < b1;) {
        if (j % gcols == 0) {
          group_params(wt.data(), err_block.data(), u, cols, tile, b0, b1, j, std::min(cols, j + gcols), cfg,
                       scale, zero, col);
          const int64_t g = j / gcols;
          for (int64_t r = v0; r < v1; ++r) {
            out.scales[r * n_groups + g] = fp32_to_fp16(scale[r - t0]);
            out.zeros[r * n_groups + g] = static_cast<uint8_t>(zero[r - t0]);
          }
        }
        const int64_t seg_end = std::min(b1, (j / gcols + 1) * gcols);
        gptq_block_columns(wt.data(), err_block.data(), codes_t.data(), u, cols, tile, b0, b1, j, seg_end,
                           scale.data(), zero.data(), maxq);
        j = seg_end;
      }
      // Lazy batch (Algorithm 1, line "W[:, block_end:] -= Err · H⁻¹[block, block_end:]"),
      // in the transposed tile: Wt[b1:, :] -= U[b0:b1, b1:]ᵀ · Err.
      if (b1 < cols) {
        gemm_strided(true, false, cols - b1, tile, b1 - b0, -1.0f, u + b0 * cols + b1, cols, err_block.data(),
                     tile, 1.0f, wt.data() + b1 * tile, tile);
      }
    }
    for (int64_t r = v0; r < v1; ++r) {
      for (int64_t i = 0; i < cols; ++i) row_codes[factor.perm[i]] = codes_t[i * tile + (r - t0)];
      pack_row(row_codes.data(), cols, cfg.bits, out.qweight.data() + r * wpr);
    }
  }
}

QuantizedLinear gptq_quantize(const Tensor& w, const Tensor& h, const QuantConfig& cfg) {
  const GptqFactor factor = gptq_prepare(h, cfg);
  QuantizedLinear out = gptq_make_output(w.rows(), factor, cfg);
  gptq_quantize_rows(w, factor, cfg, 0, w.rows(), out);
  return out;
}

}  // namespace shardq::cpu
