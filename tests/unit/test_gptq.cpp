// GPTQ: the blocked fp32 CPU version (kernels/cpu/gptq.cpp) against the unblocked double
// reference (kernels/ref/gptq_ref.cpp) on random matrices with a correlated Hessian and on
// the real stories260K weights; GPTQ beats RTN on the output error; row splits are
// bit-identical; bad Hessians fail clearly.
//
// Tolerance: the reference follows the fp32 result and accepts a differing code / zero only
// when its own double value lies within 1e-4 (code units) of the rounding boundary, and a
// differing fp16 scale only when the raw scale lies within 1e-4 (relative) of the fp16 value
// where rounding up switches; or, for all three, when that distance in weight units is
// within 1e-6 of the row's max |W| (needed for one 8-bit g32 case: a zero point 1.8e-3 code
// units from its boundary, which is 7e-8 of the row's max |W| — fp32 round-off).
// Every other difference fails. The counts are printed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <tuple>
#include <vector>

#include "common/dtype.hpp"
#include "common/error.hpp"
#include "kernels/cpu/blas.hpp"
#include "kernels/cpu/gptq.hpp"
#include "kernels/cpu/rtn.hpp"
#include "kernels/quantize.hpp"
#include "kernels/ref/gptq_ref.hpp"
#include "support/test_support.hpp"

namespace shardq {
namespace {

constexpr double tie_tol = 1e-4, tie_tol_weight = 1e-6;

Tensor random_weight(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  Tensor w({rows, cols});
  for (float& v : w.data) v = nd(gen);
  // a few large weights, as real layers have
  for (int64_t k = 0; k < rows * cols / 50; ++k) w.data[gen() % w.data.size()] *= 6.0f;
  return w;
}

// H = 2/n XᵀX (double accumulation) for X [n_tokens, cols].
Tensor hessian_of(const std::vector<double>& x, int64_t n_tokens, int64_t cols) {
  Tensor h({cols, cols});
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double s = 0.0;
      for (int64_t t = 0; t < n_tokens; ++t) s += x[t * cols + i] * x[t * cols + j];
      h.at(i, j) = static_cast<float>(2.0 * s / static_cast<double>(n_tokens));
    }
  return h;
}

// Correlated activations with a few strong channels and, when cols > 5, one dead channel.
Tensor random_hessian(int64_t cols, uint32_t seed, int64_t n_tokens = -1) {
  if (n_tokens < 0) n_tokens = 2 * cols + 16;
  std::mt19937 gen(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<double> z(static_cast<size_t>(n_tokens * cols)), x(z.size(), 0.0);
  for (double& v : z) v = nd(gen);
  std::vector<double> gain(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) gain[c] = (gen() % 7 == 0) ? 5.0 : 0.5 + (gen() % 100) / 100.0;
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t c = 0; c < cols; ++c) {
      double s = z[t * cols + c];
      if (c > 0) s += 0.6 * z[t * cols + c - 1];
      if (c > 1) s += 0.3 * z[t * cols + (c * 7 + 3) % c];
      x[t * cols + c] = gain[c] * s;
    }
  if (cols > 5)
    for (int64_t t = 0; t < n_tokens; ++t) x[t * cols + 3] = 0.0;
  return hessian_of(x, n_tokens, cols);
}

// The blocked result must be the reference's decisions up to ties; prints the counts.
void expect_matches_ref(const Tensor& w, const Tensor& h, const QuantConfig& cfg, const std::string& what) {
  const QuantizedLinear got = cpu::gptq_quantize(w, h, cfg);
  ref::GptqFollowReport rep;
  const QuantizedLinear want = ref::gptq_quantize_ref(w, h, cfg, &got, &rep, tie_tol, tie_tol_weight);
  EXPECT_EQ(rep.hard, 0) << what << ": first hard mismatch: " << rep.first_hard;
  EXPECT_EQ(got.g_idx, want.g_idx) << what;
  EXPECT_EQ(got.qweight, want.qweight) << what << " (codes after following ties)";
  EXPECT_EQ(got.scales, want.scales) << what;
  EXPECT_EQ(got.zeros, want.zeros) << what;
  if (rep.code_ties + rep.scale_ties + rep.zero_ties > 0 || rep.hard > 0) {
    std::printf("[gptq-vs-ref] %s: %lld codes, %lld code ties, %lld scale ties, %lld zero ties, hard %lld, "
                "max margin %.2e of %.0e, max weight margin %.2e of %.0e\n",
                what.c_str(), static_cast<long long>(rep.codes), static_cast<long long>(rep.code_ties),
                static_cast<long long>(rep.scale_ties), static_cast<long long>(rep.zero_ties),
                static_cast<long long>(rep.hard), rep.max_tie_margin, tie_tol, rep.max_weight_margin, tie_tol_weight);
  }
}

QuantConfig gptq_config(int bits, int group, bool sym, bool act, int block) {
  QuantConfig cfg;
  cfg.bits = bits;
  cfg.group_size = group;
  cfg.sym = sym;
  cfg.act_order = act;
  cfg.block_size = block;
  return cfg;
}

std::string describe(const QuantConfig& c, int64_t rows, int64_t cols) {
  return "[" + std::to_string(rows) + "x" + std::to_string(cols) + "] bits " + std::to_string(c.bits) + " group " +
         std::to_string(c.group_size) + (c.sym ? " sym" : " asym") + (c.act_order ? " act-order" : "") + " block " +
         std::to_string(c.block_size);
}

// ---- random matrices ------------------------------------------------------------------

using GptqParam = std::tuple<int, int, bool, bool>;  // bits, group_size, sym, act_order

class GptqVsRef : public ::testing::TestWithParam<GptqParam> {};

TEST_P(GptqVsRef, RandomMatricesEqualUnblockedReference) {
  const auto [bits, group, sym, act] = GetParam();
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1}, {3, 7}, {64, 17}, {130, 65}, {3, 127}, {64, 172}};
  uint32_t seed = 1000u * bits + static_cast<uint32_t>(group + 1) * 7u + sym * 3u + act;
  for (const auto& [rows, cols] : shapes) {
    const Tensor w = random_weight(rows, cols, ++seed);
    const Tensor h = random_hessian(cols, ++seed);
    for (int block : {1, 7, 128}) {
      const QuantConfig cfg = gptq_config(bits, group, sym, act, block);
      expect_matches_ref(w, h, cfg, describe(cfg, rows, cols));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, GptqVsRef,
                         ::testing::Combine(::testing::Values(2, 3, 4, 8), ::testing::Values(-1, 32, 128),
                                            ::testing::Bool(), ::testing::Bool()));

// ---- stories260K -----------------------------------------------------------------------

struct Stories {
  int dim = 0, hidden = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0;
  std::vector<float> emb, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3;
};

// llama2.c legacy checkpoint: 7 int32 header, then the float arrays in a fixed order.
const Stories& stories() {
  static const Stories s = [] {
    Stories m;
    const auto path = test::shared_dir() / "models/stories260K/stories260K.bin";
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path.string());
    int32_t hdr[7];
    in.read(reinterpret_cast<char*>(hdr), sizeof hdr);
    m.dim = hdr[0], m.hidden = hdr[1], m.layers = hdr[2], m.heads = hdr[3], m.kv_heads = hdr[4];
    m.vocab = std::abs(hdr[5]);
    const int64_t kv_dim = int64_t{m.dim} * m.kv_heads / m.heads, d = m.dim, l = m.layers;
    auto read = [&](std::vector<float>& v, int64_t n) {
      v.resize(static_cast<size_t>(n));
      in.read(reinterpret_cast<char*>(v.data()), n * 4);
      if (!in) throw std::runtime_error("short read in " + path.string());
    };
    read(m.emb, m.vocab * d);
    read(m.rms_att, l * d);
    read(m.wq, l * d * d);
    read(m.wk, l * kv_dim * d);
    read(m.wv, l * kv_dim * d);
    read(m.wo, l * d * d);
    read(m.rms_ffn, l * d);
    read(m.w1, l * m.hidden * d);
    read(m.w2, l * d * m.hidden);
    read(m.w3, l * m.hidden * d);
    return m;
  }();
  return s;
}

Tensor layer_matrix(const std::vector<float>& all, int layer, int64_t rows, int64_t cols) {
  const auto* p = all.data() + layer * rows * cols;
  return Tensor({rows, cols}, std::vector<float>(p, p + rows * cols));
}

struct LayerCase {
  std::string name;
  Tensor w, h;
};

// Hessians from random tokens' embeddings through the layer's RMS weights (attention and
// FFN inputs) and, for w2, through the layer's own gated FFN: silu(w1 x) * (w3 x).
std::vector<LayerCase> stories_cases(int layer) {
  const Stories& m = stories();
  const int64_t d = m.dim, hid = m.hidden, kv_dim = d * m.kv_heads / m.heads, n_tokens = 512;
  std::mt19937 gen(layer + 17);
  std::vector<double> xa(static_cast<size_t>(n_tokens * d)), xf(xa.size()), xh(static_cast<size_t>(n_tokens * hid));
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* e = m.emb.data() + (gen() % m.vocab) * d;
    double ss = 0.0;
    for (int64_t i = 0; i < d; ++i) ss += double{e[i]} * e[i];
    const double inv = 1.0 / std::sqrt(ss / d + 1e-5);
    for (int64_t i = 0; i < d; ++i) {
      xa[t * d + i] = e[i] * inv * m.rms_att[layer * d + i];
      xf[t * d + i] = e[i] * inv * m.rms_ffn[layer * d + i];
    }
    for (int64_t j = 0; j < hid; ++j) {
      double a = 0.0, b = 0.0;
      for (int64_t i = 0; i < d; ++i) {
        a += double{m.w1[(layer * hid + j) * d + i]} * xf[t * d + i];
        b += double{m.w3[(layer * hid + j) * d + i]} * xf[t * d + i];
      }
      xh[t * hid + j] = a / (1.0 + std::exp(-a)) * b;
    }
  }
  const Tensor ha = hessian_of(xa, n_tokens, d), hf = hessian_of(xf, n_tokens, d), hh = hessian_of(xh, n_tokens, hid);
  const std::string p = "layer " + std::to_string(layer) + " ";
  return {{p + "wq", layer_matrix(m.wq, layer, d, d), ha},
          {p + "wk", layer_matrix(m.wk, layer, kv_dim, d), ha},
          {p + "wo", layer_matrix(m.wo, layer, d, d), ha},
          {p + "w1", layer_matrix(m.w1, layer, hid, d), hf},
          {p + "w2", layer_matrix(m.w2, layer, d, hid), hh}};
}

class GptqStories : public ::testing::TestWithParam<GptqParam> {};

TEST_P(GptqStories, RealWeightsEqualUnblockedReference) {
  const auto [bits, group, sym, act] = GetParam();
  for (int layer : {0, 4}) {
    for (const LayerCase& lc : stories_cases(layer)) {
      for (int block : {1, 7, 128}) {
        const QuantConfig cfg = gptq_config(bits, group, sym, act, block);
        expect_matches_ref(lc.w, lc.h, cfg, lc.name + " " + describe(cfg, lc.w.rows(), lc.w.cols()));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, GptqStories,
                         ::testing::Combine(::testing::Values(2, 3, 4, 8), ::testing::Values(-1, 32, 128),
                                            ::testing::Bool(), ::testing::Bool()));

// ---- GPTQ beats RTN on the output error -------------------------------------------------

class GptqBeatsRtn : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

TEST_P(GptqBeatsRtn, LowerOutputErrorThanRtnOnSameHessian) {
  const auto [bits, group, act] = GetParam();
  QuantConfig cfg;
  cfg.bits = bits;
  cfg.group_size = group;
  cfg.act_order = act;
  std::vector<LayerCase> cases;
  uint32_t seed = 77u * bits + group + act;
  for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{64, 17}, {130, 65}, {64, 127}, {3, 172}})
    cases.push_back({"random [" + std::to_string(rows) + "x" + std::to_string(cols) + "]",
                     random_weight(rows, cols, ++seed), random_hessian(cols, ++seed)});
  for (int layer : {0, 2, 4})
    for (LayerCase& lc : stories_cases(layer)) cases.push_back(std::move(lc));
  for (const LayerCase& lc : cases) {
    cfg.method = quant_method::gptq;
    const double e_gptq = quant_relative_error(lc.w, quantize_linear(lc.w, lc.h, cfg), lc.h);
    cfg.method = quant_method::rtn;
    const double e_rtn = quant_relative_error(lc.w, quantize_linear(lc.w, Tensor{}, cfg), lc.h);
    // One known exception, kept visible: without act-order at 2 bits, GPTQ's updates can
    // widen later groups' ranges enough that it only ties RTN (stories260K layer 0 w2,
    // whose gated-FFN inputs have strong outlier channels: 0.111 vs 0.106 at g32).
    if (!act && bits == 2) {
      EXPECT_LT(e_gptq, 1.1 * e_rtn) << lc.name << " bits " << bits << " group " << group;
      if (e_gptq >= e_rtn) std::printf("[gptq-vs-rtn] %s 2-bit g%d no act-order: gptq %.4g rtn %.4g\n", lc.name.c_str(), group, e_gptq, e_rtn);
    } else {
      EXPECT_LT(e_gptq, e_rtn) << lc.name << " bits " << bits << " group " << group;
    }
    EXPECT_GT(e_gptq, 0.0) << lc.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Bits, GptqBeatsRtn,
                         ::testing::Combine(::testing::Values(2, 3, 4), ::testing::Values(-1, 32, 128),
                                            ::testing::Bool()));

// ---- row splits, threads, errors ---------------------------------------------------------

TEST(GptqRows, AnyRowSplitAndThreadCountIsBitIdentical) {
  const int64_t rows = 300, cols = 172;
  const Tensor w = random_weight(rows, cols, 5);
  const Tensor h = random_hessian(cols, 6);
  QuantConfig cfg;
  cfg.group_size = 32;
  cfg.block_size = 64;
  const QuantizedLinear whole = cpu::gptq_quantize(w, h, cfg);
  const cpu::GptqFactor factor = cpu::gptq_prepare(h, cfg);
  const int threads = cpu::blas_threads();
  for (const std::vector<int64_t>& cuts :
       {std::vector<int64_t>{0, 50, 64, 129, 130, 257, 300}, std::vector<int64_t>{0, 1, 299, 300}}) {
    for (int n_threads : {1, threads}) {
      cpu::blas_set_threads(n_threads);
      QuantizedLinear parts = cpu::gptq_make_output(rows, factor, cfg);
      for (size_t k = 0; k + 1 < cuts.size(); ++k) cpu::gptq_quantize_rows(w, factor, cfg, cuts[k], cuts[k + 1], parts);
      EXPECT_EQ(parts.qweight, whole.qweight) << "threads " << n_threads << ", " << cuts.size() - 1 << " parts";
      EXPECT_EQ(parts.scales, whole.scales);
      EXPECT_EQ(parts.zeros, whole.zeros);
      EXPECT_EQ(parts.g_idx, whole.g_idx);
    }
  }
  cpu::blas_set_threads(threads);
}

TEST(GptqRows, GidxFollowsActOrderAndDeadColumnsDequantizeToZero) {
  const int64_t rows = 8, cols = 40;
  const Tensor w = random_weight(rows, cols, 9);
  const Tensor h = random_hessian(cols, 10);  // column 3 is dead
  QuantConfig cfg;
  cfg.group_size = 16;
  const QuantizedLinear q = cpu::gptq_quantize(w, h, cfg);
  ASSERT_EQ(q.g_idx.size(), static_cast<size_t>(cols));
  std::vector<int> per_group(3, 0);
  for (int32_t g : q.g_idx) ++per_group.at(g);
  EXPECT_EQ(per_group, (std::vector<int>{16, 16, 8}));
  // the strongest channel (largest H_ii) is in group 0
  int64_t best = 0;
  for (int64_t c = 1; c < cols; ++c)
    if (h.at(c, c) > h.at(best, best)) best = c;
  EXPECT_EQ(q.g_idx[best], 0);
  const Tensor d = dequantize(q);
  for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(d.at(r, 3), 0.0f);
  cfg.act_order = false;
  EXPECT_TRUE(cpu::gptq_quantize(w, h, cfg).g_idx.empty());
}

TEST(GptqErrors, IndefiniteHessianRetriesDampingThenThrows) {
  QuantConfig cfg;
  Tensor h({2, 2}, {1.0f, 1.05f, 1.05f, 1.0f});  // eigenvalue -0.05: 1% damping fails, 10% works
  EXPECT_FLOAT_EQ(cpu::gptq_prepare(h, cfg).damp, 0.1f);
  Tensor neg({2, 2}, {-1.0f, 0.0f, 0.0f, -1.0f});
  try {
    cpu::gptq_prepare(neg, cfg);
    FAIL() << "no exception";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("not positive definite"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cpu::gptq_prepare(Tensor({2, 3}), cfg), error);
  Tensor nan_h({1, 1}, {NAN});
  EXPECT_THROW(cpu::gptq_prepare(nan_h, cfg), error);
  const Tensor w = random_weight(2, 3, 1);
  EXPECT_THROW(quantize_linear(w, Tensor{}, cfg), error);         // gptq needs H
  EXPECT_THROW(quantize_linear(w, random_hessian(4, 1), cfg), error);  // shape mismatch
  cfg.bits = 5;
  EXPECT_THROW(quantize_linear(w, random_hessian(3, 1), cfg), spec_error);
}

}  // namespace
}  // namespace shardq
