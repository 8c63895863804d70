// Forward pass (worker/forward.hpp, kernels/cpu/forward_ops.hpp) against the double-precision
// reference kernels/ref/forward_ref.hpp on random small models with awkward shapes: GQA,
// head_dim 8 and 16, Qwen2 biases, windows longer than one attention block, seq_len 1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include <fmt/format.h>

#include "common/error.hpp"
#include "kernels/ref/forward_ref.hpp"
#include "worker/forward.hpp"

namespace shardq {
namespace {

struct ForwardCase {
  const char* name;
  int hidden, heads, kv_heads, head_dim, intermediate, vocab, layers, n_seq, seq_len;
  bool bias;
};

ModelConfig make_config(const ForwardCase& fc) {
  ModelConfig c;
  c.architecture = fc.bias ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
  c.model_type = fc.bias ? "qwen2" : "llama";
  c.hidden_size = fc.hidden;
  c.intermediate_size = fc.intermediate;
  c.num_layers = fc.layers;
  c.num_heads = fc.heads;
  c.num_kv_heads = fc.kv_heads;
  c.head_dim = fc.head_dim;
  c.vocab_size = fc.vocab;
  c.max_position_embeddings = 512;
  c.rms_norm_eps = 1e-5f;
  c.rope_theta = fc.bias ? 1000000.0f : 10000.0f;
  c.attention_bias = fc.bias;
  c.tie_word_embeddings = fc.layers % 2 == 1;
  return c;
}

std::vector<int32_t> random_tokens(int64_t n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return t;
}

// max |a - b| / max |ref|; prints the first mismatches when above `tol`.
template <typename A>
void expect_close(const A& got, const std::vector<double>& ref, double tol, const std::string& what) {
  ASSERT_EQ(static_cast<size_t>(got.size()), ref.size()) << what;
  double max_ref = 0, max_err = 0;
  size_t worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    max_ref = std::max(max_ref, std::abs(ref[i]));
    const double e = std::abs(static_cast<double>(got[i]) - ref[i]);
    if (e > max_err) max_err = e, worst = i;
  }
  const double rel = max_err / std::max(max_ref, 1e-30);
  EXPECT_LE(rel, tol) << what << ": max error " << max_err << " at " << worst << " (got " << got[worst]
                      << ", ref " << ref[worst] << "), " << rel / tol * 100 << "% of tolerance";
}

class ForwardTest : public ::testing::TestWithParam<ForwardCase> {};

TEST_P(ForwardTest, LayerAndTapsMatchReference) {
  const ForwardCase fc = GetParam();
  const ModelConfig c = make_config(fc);
  const ModelWeights m = model_weights_random(c, 11);
  const int64_t n = static_cast<int64_t>(fc.n_seq) * fc.seq_len;
  const std::vector<int32_t> tokens = random_tokens(n, c.vocab_size, 5);
  std::vector<float> hidden(n * c.hidden_size);
  embed(m, tokens.data(), n, hidden.data());
  expect_close(hidden, ref::embed_ref(m, tokens), 0.0, "embedding");
  for (int l = 0; l < c.num_layers; ++l) {
    LayerTaps taps;
    ref::LayerTapsRef taps_ref;
    // The reference starts from the fast path's input so each layer is checked alone.
    const std::vector<double> ref = ref::layer_forward_ref(c, m.layer(l), std::vector<double>(hidden.begin(), hidden.end()),
                                                           fc.n_seq, fc.seq_len, &taps_ref);
    layer_forward(c, m.layer(l), hidden.data(), fc.n_seq, fc.seq_len, &taps);
    const std::string at = fmt::format("{} layer {}", fc.name, l);
    expect_close(taps.attn_in.data, taps_ref.attn_in, 1e-4, at + " attn_in");
    expect_close(taps.o_in.data, taps_ref.o_in, 1e-4, at + " o_in");
    expect_close(taps.mlp_in.data, taps_ref.mlp_in, 1e-4, at + " mlp_in");
    expect_close(taps.down_in.data, taps_ref.down_in, 1e-4, at + " down_in");
    expect_close(hidden, ref, 1e-4, at + " output");
    EXPECT_EQ(taps.o_in.shape, (std::vector<int64_t>{n, c.q_dim()}));
    EXPECT_EQ(taps.down_in.shape, (std::vector<int64_t>{n, c.intermediate_size}));
  }
}

TEST_P(ForwardTest, LogitsMatchReference) {
  const ForwardCase fc = GetParam();
  const ModelConfig c = make_config(fc);
  const ModelWeights m = model_weights_random(c, 23);
  const std::vector<int32_t> tokens = random_tokens(static_cast<int64_t>(fc.n_seq) * fc.seq_len, c.vocab_size, 9);
  const Tensor logits = model_forward(m, tokens, fc.n_seq, fc.seq_len);
  EXPECT_EQ(logits.shape, (std::vector<int64_t>{static_cast<int64_t>(tokens.size()), c.vocab_size}));
  expect_close(logits.data, ref::model_forward_ref(m, tokens, fc.n_seq, fc.seq_len), 1e-4,
               std::string(fc.name) + " logits");
}

TEST_P(ForwardTest, KvCachedDecoderMatchesWindowForward) {
  const ForwardCase fc = GetParam();
  const ModelConfig c = make_config(fc);
  const ModelWeights m = model_weights_random(c, 31);
  const std::vector<int32_t> tokens = random_tokens(fc.seq_len, c.vocab_size, 3);
  const std::vector<double> ref = ref::model_forward_ref(m, tokens, 1, fc.seq_len);
  Decoder decoder(m, fc.seq_len);
  std::vector<float> stepped;
  for (int32_t t : tokens) {
    auto logits = decoder.step(t);
    stepped.insert(stepped.end(), logits.begin(), logits.end());
  }
  expect_close(stepped, ref, 1e-4, std::string(fc.name) + " decoder logits");
  EXPECT_THROW(decoder.step(tokens[0]), error);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ForwardTest,
    ::testing::Values(ForwardCase{"gqa_hd8", 32, 4, 2, 8, 37, 29, 2, 3, 7, false},
                      ForwardCase{"qwen2_bias_hd16_mqa", 48, 3, 1, 16, 65, 17, 1, 2, 17, true},
                      ForwardCase{"mha_long_window", 64, 4, 4, 16, 172, 33, 1, 1, 131, false},
                      ForwardCase{"explicit_head_dim", 40, 4, 2, 16, 7, 5, 2, 2, 9, false},
                      ForwardCase{"single_token", 16, 2, 2, 8, 17, 7, 1, 4, 1, false}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Forward, RejectsTokenOutsideVocab) {
  ForwardCase fc{"x", 16, 2, 2, 8, 17, 7, 1, 1, 2, false};
  const ModelWeights m = model_weights_random(make_config(fc), 1);
  const std::vector<int32_t> tokens{1, 7};
  EXPECT_THROW(model_forward(m, tokens, 1, 2), spec_error);
}

}  // namespace
}  // namespace shardq
