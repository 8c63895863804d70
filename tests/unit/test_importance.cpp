// Importance scores (worker/importance.hpp) and calibration statistics
// (worker/calibration.hpp) on tiny random models against naive references written here:
// LIM from the double reference forward, ZD by direct counting, the KL probe from
// reference logits with the layer replaced, the Hessians of each linear group, and the
// seeded calibration windows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "common/error.hpp"
#include "kernels/ref/forward_ref.hpp"
#include "kernels/ref/hessian_ref.hpp"
#include "worker/calibration.hpp"
#include "worker/importance.hpp"

namespace shardq {
namespace {

ModelConfig tiny_config(bool bias) {
  ModelConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 45;
  c.num_layers = 3;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 23;
  c.max_position_embeddings = 64;
  c.attention_bias = bias;
  return c;
}

std::vector<int32_t> random_tokens(int64_t n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return t;
}

double naive_lim(const std::vector<double>& in, const std::vector<double>& out, int64_t n, int64_t h) {
  double sum = 0;
  for (int64_t t = 0; t < n; ++t) {
    double dot = 0, a = 0, b = 0;
    for (int64_t i = 0; i < h; ++i) {
      dot += in[t * h + i] * out[t * h + i];
      a += in[t * h + i] * in[t * h + i];
      b += out[t * h + i] * out[t * h + i];
    }
    sum += dot / std::sqrt(a * b);
  }
  return -sum / static_cast<double>(n);
}

TEST(Importance, LayerCalibrationMatchesReference) {
  for (bool bias : {false, true}) {
    const ModelConfig c = tiny_config(bias);
    const ModelWeights m = model_weights_random(c, 3);
    const int n_seq = 3, seq_len = 11;
    const int64_t n = n_seq * seq_len;
    const std::vector<int32_t> tokens = random_tokens(n, c.vocab_size, 2);
    std::vector<float> hidden(n * c.hidden_size);
    embed(m, tokens.data(), n, hidden.data());
    for (int l = 0; l < c.num_layers; ++l) {
      const std::vector<double> in(hidden.begin(), hidden.end());
      ref::LayerTapsRef taps;
      const std::vector<double> out = ref::layer_forward_ref(c, m.layer(l), in, n_seq, seq_len, &taps);
      LayerCalibration cal(c);
      cal.forward(c, m.layer(l), hidden.data(), n_seq, seq_len);
      EXPECT_NEAR(cal.lim.score(), naive_lim(in, out, n, c.hidden_size), 1e-5) << "layer " << l;
      EXPECT_EQ(cal.lim.n_tokens(), n);
      // Each Hessian against the naive double sum over the reference taps.
      const std::pair<const cpu::HessianAccumulator*, const std::vector<double>*> groups[] = {
          {&cal.attn_in, &taps.attn_in}, {&cal.o_in, &taps.o_in}, {&cal.mlp_in, &taps.mlp_in}, {&cal.down_in, &taps.down_in}};
      for (const auto& [acc, x] : groups) {
        const std::vector<float> xf(x->begin(), x->end());
        const std::vector<double> h_ref = ref::hessian_ref(xf.data(), n, acc->dim());
        const Tensor h = acc->finalize();
        double max_ref = 0, max_err = 0;
        for (size_t i = 0; i < h_ref.size(); ++i) {
          max_ref = std::max(max_ref, std::abs(h_ref[i]));
          max_err = std::max(max_err, std::abs(h.data[i] - h_ref[i]));
        }
        EXPECT_LE(max_err, 2e-4 * max_ref) << "layer " << l << " dim " << acc->dim();
      }
    }
  }
}

TEST(Importance, LimDoesNotDependOnMicroBatching) {
  const ModelConfig c = tiny_config(false);
  const ModelWeights m = model_weights_random(c, 5);
  const int seq_len = 8, n_seq = 6;
  const std::vector<int32_t> tokens = random_tokens(n_seq * seq_len, c.vocab_size, 9);
  std::vector<float> hidden(tokens.size() * c.hidden_size);
  embed(m, tokens.data(), static_cast<int64_t>(tokens.size()), hidden.data());
  std::vector<float> out = hidden;
  layer_forward(c, m.layer(0), out.data(), n_seq, seq_len);
  const int64_t h = c.hidden_size;
  LimAccumulator all, a, b;
  all.add(hidden.data(), out.data(), n_seq * seq_len, h);
  a.add(hidden.data(), out.data(), 2 * seq_len, h);
  b.add(hidden.data() + 2 * seq_len * h, out.data() + 2 * seq_len * h, 4 * seq_len, h);
  b.merge(a);
  EXPECT_EQ(b.cos_sum_fixed(), all.cos_sum_fixed());
  EXPECT_EQ(b.score(), all.score());
}

TEST(Importance, ZdCountsWeightsBeyondOneStandardDeviation) {
  const ModelConfig c = tiny_config(false);
  LayerWeights w = layer_weights_random(c, 17);
  // Heavier tails in one linear, so the fraction is not the uniform distribution's.
  for (float& x : w.down_proj.data) x *= 3.0f;
  double sum = 0, count = 0;
  for (const auto& [name, t] : w.linears())
    for (float x : t->data) sum += x, count += 1;
  const double mean = sum / count;
  double var = 0;
  for (const auto& [name, t] : w.linears())
    for (float x : t->data) var += (x - mean) * (x - mean);
  const double sd = std::sqrt(var / count);
  double above = 0;
  for (const auto& [name, t] : w.linears())
    for (float x : t->data) above += std::abs((x - mean) / sd) > 1.0;
  EXPECT_DOUBLE_EQ(zd_score(w), above / count);
  EXPECT_GT(zd_score(w), 0.0);
  EXPECT_LT(zd_score(w), 1.0);
}

TEST(Importance, LayerReplacementKlMatchesReference) {
  const ModelConfig c = tiny_config(true);
  const ModelWeights m = model_weights_random(c, 21);
  const int n_seq = 2, seq_len = 9;
  const std::vector<int32_t> tokens = random_tokens(n_seq * seq_len, c.vocab_size, 4);
  const LayerSensitivityProbe probe(m, tokens, n_seq, seq_len);
  EXPECT_NEAR(probe.kl_with_layer(1, m.layer(1)), 0.0, 1e-10);

  LayerWeights noisy = m.layer(1);
  std::mt19937_64 rng(6);
  for (auto& [name, t] : noisy.linears())
    for (float& x : t->data) x += static_cast<float>(static_cast<int64_t>(rng() % 2001) - 1000) * 2e-5f;
  ModelWeights replaced = m;
  replaced.layer(1) = noisy;
  const std::vector<double> p = ref::model_forward_ref(m, tokens, n_seq, seq_len);
  const std::vector<double> q = ref::model_forward_ref(replaced, tokens, n_seq, seq_len);
  const int v = c.vocab_size;
  double kl = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    double mp = -1e300, mq = -1e300, sp = 0, sq = 0;
    for (int j = 0; j < v; ++j) mp = std::max(mp, p[t * v + j]), mq = std::max(mq, q[t * v + j]);
    for (int j = 0; j < v; ++j) sp += std::exp(p[t * v + j] - mp), sq += std::exp(q[t * v + j] - mq);
    for (int j = 0; j < v; ++j) {
      const double lp = p[t * v + j] - mp - std::log(sp), lq = q[t * v + j] - mq - std::log(sq);
      kl += std::exp(lp) * (lp - lq);
    }
  }
  kl /= static_cast<double>(tokens.size());
  const double got = probe.kl_with_layer(1, noisy);
  EXPECT_GT(kl, 1e-7);
  EXPECT_NEAR(got, kl, 0.02 * kl + 1e-9);
  EXPECT_DOUBLE_EQ(layer_replacement_kl(m, 1, noisy, tokens, n_seq, seq_len), got);
  EXPECT_THROW(probe.kl_with_layer(3, noisy), spec_error);
}

TEST(Calibration, SplitMix64KnownValues) {
  uint64_t state = 0;
  // Reference outputs of splitmix64 seeded with 0 (Vigna's splitmix64.c).
  EXPECT_EQ(splitmix64_next(state), 0xe220a8397b1dcdafull);
  EXPECT_EQ(splitmix64_next(state), 0x6e789e6aa1b965f4ull);
  EXPECT_EQ(uniform_below(0, 10), 0u);
  EXPECT_EQ(uniform_below(~0ull, 10), 9u);
  EXPECT_EQ(uniform_below(1ull << 63, 10), 5u);
}

TEST(Calibration, WindowsAreSeededSlicesOfTheStream) {
  std::vector<int32_t> stream(1000);
  for (size_t i = 0; i < stream.size(); ++i) stream[i] = static_cast<int32_t>(i);
  const auto w = calibration_windows(stream, 50, 64, 7);
  ASSERT_EQ(w.size(), 50u * 64u);
  uint64_t state = 7;
  for (int s = 0; s < 50; ++s) {
    const int32_t start = w[s * 64];
    EXPECT_EQ(static_cast<uint64_t>(start), uniform_below(splitmix64_next(state), 1000 - 64 + 1));
    for (int i = 0; i < 64; ++i) ASSERT_EQ(w[s * 64 + i], start + i);
  }
  EXPECT_EQ(calibration_windows(stream, 50, 64, 7), w);
  EXPECT_NE(calibration_windows(stream, 50, 64, 8), w);
  const auto whole = calibration_windows(stream, 3, 1000, 1);  // only start 0 fits
  for (int k = 0; k < 3; ++k) EXPECT_TRUE(std::equal(stream.begin(), stream.end(), whole.begin() + k * 1000));
  EXPECT_THROW(calibration_windows(stream, 1, 1001, 0), spec_error);
  EXPECT_THROW(calibration_stream("/nonexistent", "csv", nullptr, 10), spec_error);
}

}  // namespace
}  // namespace shardq
