// Unblocked double-precision GPTQ reference (see gptq_ref.hpp).
#include "kernels/ref/gptq_ref.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <fmt/format.h>

#include "common/dtype.hpp"
#include "common/error.hpp"
#include "kernels/cpu/pack.hpp"

namespace shardq::ref {
namespace {

using matrix = std::vector<double>;

// Lower Cholesky L (A = L Lᵀ) by the textbook loops; false when A is not positive definite.
bool cholesky_lower(int64_t n, const matrix& a, matrix& l) {
  l.assign(static_cast<size_t>(n * n), 0.0);
  for (int64_t j = 0; j < n; ++j) {
    double s = a[j * n + j];
    for (int64_t k = 0; k < j; ++k) s -= l[j * n + k] * l[j * n + k];
    if (!(s > 0.0)) return false;
    l[j * n + j] = std::sqrt(s);
    for (int64_t i = j + 1; i < n; ++i) {
      double t = a[i * n + j];
      for (int64_t k = 0; k < j; ++k) t -= l[i * n + k] * l[j * n + k];
      l[i * n + j] = t / l[j * n + j];
    }
  }
  return true;
}

// U upper with H⁻¹ = UᵀU: H = L Lᵀ, H⁻¹ = L⁻ᵀ L⁻¹, then U = chol(H⁻¹)ᵀ.
bool hinv_cholesky_upper(int64_t n, const matrix& h, matrix& u) {
  matrix l;
  if (!cholesky_lower(n, h, l)) return false;
  matrix linv(static_cast<size_t>(n * n), 0.0);
  for (int64_t c = 0; c < n; ++c) {  // forward substitution L x = e_c
    for (int64_t i = c; i < n; ++i) {
      double s = i == c ? 1.0 : 0.0;
      for (int64_t k = c; k < i; ++k) s -= l[i * n + k] * linv[k * n + c];
      linv[i * n + c] = s / l[i * n + i];
    }
  }
  matrix hinv(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t k = std::max(i, j); k < n; ++k) s += linv[k * n + i] * linv[k * n + j];
      hinv[i * n + j] = s;
    }
  matrix l2;
  if (!cholesky_lower(n, hinv, l2)) return false;
  u.assign(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) u[i * n + j] = l2[j * n + i];
  return true;
}

double fp16_scale_up(double raw) {
  const float r = static_cast<float>(std::clamp(raw, std::ldexp(1.0, -24), 65504.0));
  uint16_t h = fp32_to_fp16(r);
  if (static_cast<double>(fp16_to_fp32(h)) < raw && h < 0x7bff) ++h;
  return fp16_to_fp32(h);
}

}  // namespace

QuantizedLinear gptq_quantize_ref(const Tensor& w, const Tensor& h, const QuantConfig& cfg,
                                  const QuantizedLinear* follow, GptqFollowReport* report, double tol,
                                  double tol_w) {
  const int64_t rows = w.rows(), n = w.cols();
  if (h.rows() != n || h.cols() != n) throw error("gptq_ref: Hessian does not match the weight");
  GptqFollowReport local;
  GptqFollowReport& rep = report ? *report : local;
  auto hard = [&](const std::string& what) {
    if (rep.hard++ == 0) rep.first_hard = what;
  };
  // margin: distance to the boundary in the decision's own units; weight_margin: the same
  // distance in weight units divided by the row's max |W|.
  auto is_tie = [&](double margin, double weight_margin) {
    if (margin <= tol) {
      rep.max_tie_margin = std::max(rep.max_tie_margin, margin);
      return true;
    }
    if (weight_margin <= tol_w) {
      rep.max_weight_margin = std::max(rep.max_weight_margin, weight_margin);
      return true;
    }
    return false;
  };

  matrix hs(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) hs[i * n + j] = hs[j * n + i] = h.at(i, j);
  std::vector<bool> dead(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    dead[i] = hs[i * n + i] == 0.0;
    if (dead[i]) hs[i * n + i] = 1.0;
  }
  std::vector<int32_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  if (cfg.act_order) {
    // selection by hand: largest diagonal first, lowest index among equals
    std::vector<bool> used(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      int64_t best = -1;
      for (int64_t c = 0; c < n; ++c)
        if (!used[c] && (best < 0 || hs[c * n + c] > hs[best * n + best])) best = c;
      used[best] = true;
      perm[i] = static_cast<int32_t>(best);
    }
  }
  matrix hp(static_cast<size_t>(n * n));
  double mean = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) hp[i * n + j] = hs[perm[i] * n + perm[j]];
    mean += hp[i * n + i];
  }
  mean /= static_cast<double>(n);
  matrix u;
  double damp = cfg.damp;
  bool ok = false;
  for (int attempt = 0; attempt <= 4 && !ok; ++attempt) {
    matrix hd = hp;
    for (int64_t i = 0; i < n; ++i) hd[i * n + i] += damp * mean;
    ok = hinv_cholesky_upper(n, hd, u);
    if (!ok) damp = damp > 0.0 ? damp * 10.0 : 1e-4;
  }
  if (!ok) throw error("gptq_ref: Hessian not positive definite");

  const int64_t gcols = cfg.group_size > 0 ? cfg.group_size : n;
  const int64_t n_groups = (n + gcols - 1) / gcols;
  const double maxq = (1 << cfg.bits) - 1;
  matrix wp(static_cast<size_t>(rows * n));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) wp[r * n + i] = dead[perm[i]] ? 0.0 : w.at(r, perm[i]);

  QuantizedLinear q;
  q.method = quant_method::gptq;
  q.rows = rows;
  q.cols = n;
  q.bits = cfg.bits;
  q.group_size = cfg.group_size;
  q.sym = cfg.sym;
  q.scales.resize(static_cast<size_t>(rows * n_groups));
  q.zeros.resize(static_cast<size_t>(rows * n_groups));
  if (cfg.act_order) {
    q.g_idx.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) q.g_idx[perm[i]] = static_cast<int32_t>(i / gcols);
  }
  std::vector<uint8_t> followed_codes;
  if (follow) followed_codes = cpu::unpack_codes(follow->qweight, rows, n, cfg.bits);
  std::vector<uint8_t> codes(static_cast<size_t>(rows * n));

  for (int64_t r = 0; r < rows; ++r) {
    double* row = wp.data() + r * n;
    double row_absmax = 0.0;
    for (int64_t i = 0; i < n; ++i) row_absmax = std::max(row_absmax, std::fabs(row[i]));
    if (row_absmax == 0.0) row_absmax = 1.0;
    double scale = 1.0, zero = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      if (i % gcols == 0) {
        const int64_t g = i / gcols;
        double xmin = 0.0, xmax = 0.0;
        for (int64_t c = i; c < std::min(n, i + gcols); ++c) {
          xmin = std::min(xmin, row[c]);
          xmax = std::max(xmax, row[c]);
        }
        if (cfg.sym) {
          xmax = std::max(-xmin, xmax);
          xmin = -xmax;
        }
        if (xmin == xmax) {
          xmin = -1.0;
          xmax = 1.0;
        }
        const double raw = (xmax - xmin) / maxq;
        scale = fp16_scale_up(raw);
        if (follow) {
          const double fs = fp16_to_fp32(follow->scales[r * n_groups + g]);
          if (fs != scale) {
            // rounding up switches at the lower of the two values: a tie when raw sits near it
            const double lower = std::min(fs, scale);
            const double margin = std::fabs(raw - lower) / raw;
            if (std::abs(int{fp32_to_fp16(static_cast<float>(fs))} - int{fp32_to_fp16(static_cast<float>(scale))}) == 1 &&
                is_tie(margin, std::fabs(raw - lower) * maxq / row_absmax)) {
              ++rep.scale_ties;
            } else {
              hard(fmt::format("scale row {} group {}: followed {} reference {} (raw {})", r, g, fs, scale, raw));
            }
            scale = fs;
          }
        }
        if (cfg.sym) {
          zero = std::floor((maxq + 1.0) / 2.0);
        } else {
          const double z = -xmin / scale;
          zero = std::clamp(std::nearbyint(z), 0.0, maxq);
          if (follow) {
            const double fz = follow->zeros[r * n_groups + g];
            if (fz != zero) {
              const double margin = std::fabs(z - 0.5 * (fz + zero));
              if (std::fabs(fz - zero) == 1.0 && is_tie(margin, margin * scale / row_absmax)) {
                ++rep.zero_ties;
              } else {
                hard(fmt::format("zero row {} group {}: followed {} reference {} (value {})", r, g, fz, zero, z));
              }
              zero = fz;
            }
          }
        }
        q.scales[r * n_groups + g] = fp32_to_fp16(static_cast<float>(scale));
        q.zeros[r * n_groups + g] = static_cast<uint8_t>(zero);
      }
      const double y = std::nearbyint(row[i] / scale) + zero;
      double code = std::clamp(y, 0.0, maxq);
      if (follow) {
        ++rep.codes;
        const double fc = followed_codes[r * n + perm[i]];
        if (fc != code) {
          const double value = row[i] / scale + zero;
          const double margin = std::fabs(value - 0.5 * (fc + code));
          if (std::fabs(fc - code) == 1.0 && is_tie(margin, margin * scale / row_absmax)) {
            ++rep.code_ties;
          } else {
            hard(fmt::format("code row {} column {} (step {}): followed {} reference {} (value {})", r, perm[i], i,
                             fc, code, value));
          }
          code = fc;
        }
      }
      codes[r * n + perm[i]] = static_cast<uint8_t>(code);
      const double err = (row[i] - scale * (code - zero)) / u[i * n + i];
      for (int64_t c = i + 1; c < n; ++c) row[c] -= err * u[i * n + c];
    }
  }
  q.qweight = cpu::pack_codes(codes, rows, n, cfg.bits);
  return q;
}

}  // namespace shardq::ref
