// Llama-family decoder forward pass; see forward.hpp.
#include "worker/forward.hpp"

#include <algorithm>
#include <functional>

#include <fmt/format.h>

#include "common/error.hpp"
#include "kernels/cpu/blas.hpp"
#include "kernels/cpu/forward_ops.hpp"

namespace shardq {

namespace {

void copy_tap(Tensor& tap, const float* src, int64_t rows, int64_t cols) {
  tap.shape = {rows, cols};
  tap.data.assign(src, src + rows * cols);
}

// q, k, v [n_tokens, ·] already roped → attention output [n_tokens, q_dim].
using AttentionFn = std::function<void(const float* q, const float* k, const float* v, float* out)>;

// The layer body shared by the windowed batch and the KV-cached step; only the attention
// (what the queries may see) differs between the two.
void layer_body(const ModelConfig& c, const LayerWeights& w, float* hidden, int64_t n, const int32_t* positions,
                const AttentionFn& attention, LayerTaps* taps) {
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
  std::vector<float> xn(n * h), q(n * qd), k(n * kvd), v(n * kvd), att(n * qd);
  cpu::rmsnorm(hidden, w.attn_norm.ptr(), xn.data(), n, h, c.rms_norm_eps);
  if (taps) copy_tap(taps->attn_in, xn.data(), n, h);
  cpu::gemm_nt(n, qd, h, xn.data(), w.q_proj.ptr(), q.data());
  cpu::gemm_nt(n, kvd, h, xn.data(), w.k_proj.ptr(), k.data());
  cpu::gemm_nt(n, kvd, h, xn.data(), w.v_proj.ptr(), v.data());
  if (c.attention_bias) {
    cpu::add_bias(q.data(), w.q_bias.ptr(), n, qd);
    cpu::add_bias(k.data(), w.k_bias.ptr(), n, kvd);
    cpu::add_bias(v.data(), w.v_bias.ptr(), n, kvd);
  }
  cpu::rope_rotate_half(q.data(), n, c.num_heads, c.head_dim, positions, c.rope_theta);
  cpu::rope_rotate_half(k.data(), n, c.num_kv_heads, c.head_dim, positions, c.rope_theta);
  attention(q.data(), k.data(), v.data(), att.data());
  if (taps) copy_tap(taps->o_in, att.data(), n, qd);
  cpu::gemm_nt(n, h, qd, att.data(), w.o_proj.ptr(), hidden, 1.0f, 1.0f);  // residual folded in (beta = 1)

  cpu::rmsnorm(hidden, w.ffn_norm.ptr(), xn.data(), n, h, c.rms_norm_eps);
  if (taps) copy_tap(taps->mlp_in, xn.data(), n, h);
  std::vector<float> gate(n * inter), up(n * inter);
  cpu::gemm_nt(n, inter, h, xn.data(), w.gate_proj.ptr(), gate.data());
  cpu::gemm_nt(n, inter, h, xn.data(), w.up_proj.ptr(), up.data());
  cpu::swiglu(gate.data(), up.data(), gate.data(), n * inter);
  if (taps) copy_tap(taps->down_in, gate.data(), n, inter);
  cpu::gemm_nt(n, h, inter, gate.data(), w.down_proj.ptr(), hidden, 1.0f, 1.0f);
}

}  // namespace

void embed(const ModelWeights& m, const int32_t* tokens, int64_t n, float* hidden) {
  const int64_t h = m.config.hidden_size, vocab = m.config.vocab_size;
  if (!m.has_embedding()) throw error("forward: the embedding (model.embed_tokens.weight) is not loaded");
  for (int64_t t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= vocab)
      throw spec_error("tokens", fmt::format("token id {} at position {} outside the vocabulary of {}", tokens[t], t, vocab));
    std::copy_n(m.embed_tokens.ptr() + tokens[t] * h, h, hidden + t * h);
  }
}

void layer_forward(const ModelConfig& c, const LayerWeights& w, float* hidden, int n_seq, int seq_len,
                   LayerTaps* taps) {
  const int64_t n = static_cast<int64_t>(n_seq) * seq_len;
  std::vector<int32_t> positions(n);
  for (int64_t t = 0; t < n; ++t) positions[t] = static_cast<int32_t>(t % seq_len);
  layer_body(c, w, hidden, n, positions.data(),
             [&](const float* q, const float* k, const float* v, float* out) {
               cpu::attention_causal(q, k, v, out, n_seq, seq_len, c.num_heads, c.num_kv_heads, c.head_dim);
             },
             taps);
}

void head_forward(const ModelWeights& m, const float* hidden, int64_t n, float* logits) {
  if (!m.has_head()) throw error("forward: the final norm and lm_head are not loaded");
  const int64_t h = m.config.hidden_size;
  std::vector<float> xn(n * h);
  cpu::rmsnorm(hidden, m.final_norm.ptr(), xn.data(), n, h, m.config.rms_norm_eps);
  cpu::gemm_nt(n, m.config.vocab_size, h, xn.data(), m.head().ptr(), logits);
}

Tensor model_forward(const ModelWeights& m, std::span<const int32_t> tokens, int n_seq, int seq_len,
                     const LayerOverride& override_layer) {
  const int64_t n = static_cast<int64_t>(n_seq) * seq_len;
  if (static_cast<int64_t>(tokens.size()) != n)
    throw error(fmt::format("forward: {} tokens given for {} windows of {}", tokens.size(), n_seq, seq_len));
  if (m.layer_begin != 0 || m.layer_end != m.config.num_layers)
    throw error("forward: model_forward needs every layer loaded");
  std::vector<float> hidden(n * m.config.hidden_size);
  embed(m, tokens.data(), n, hidden.data());
  for (int l = m.layer_begin; l < m.layer_end; ++l) {
    const LayerWeights& w = (l == override_layer.layer && override_layer.weights) ? *override_layer.weights : m.layer(l);
    layer_forward(m.config, w, hidden.data(), n_seq, seq_len);
  }
  Tensor logits({n, static_cast<int64_t>(m.config.vocab_size)});
  head_forward(m, hidden.data(), n, logits.ptr());
  return logits;
}

Decoder::Decoder(const ModelWeights& model, int max_seq)
    : model_(model), max_seq_(max_seq), hidden_(model.config.hidden_size), logits_(model.config.vocab_size) {
  if (model.layer_begin != 0 || model.layer_end != model.config.num_layers)
    throw error("generate: the decoder needs every layer loaded");
  const size_t cache = static_cast<size_t>(max_seq) * model.config.kv_dim();
  k_cache_.assign(model.layers.size(), std::vector<float>(cache));
  v_cache_.assign(model.layers.size(), std::vector<float>(cache));
}

std::span<const float> Decoder::step(int32_t token) {
  if (pos_ >= max_seq_) throw error(fmt::format("generate: position {} beyond the context of {}", pos_, max_seq_));
  const ModelConfig& c = model_.config;
  const int64_t kvd = c.kv_dim();
  embed(model_, &token, 1, hidden_.data());
  const int32_t position = pos_;
  for (size_t l = 0; l < model_.layers.size(); ++l) {
    float* kc = k_cache_[l].data();
    float* vc = v_cache_[l].data();
    layer_body(c, model_.layers[l], hidden_.data(), 1, &position,
               [&](const float* q, const float* k, const float* v, float* out) {
                 std::copy_n(k, kvd, kc + position * kvd);
                 std::copy_n(v, kvd, vc + position * kvd);
                 cpu::attention_single(q, kc, vc, out, position, c.num_heads, c.num_kv_heads, c.head_dim);
               },
               nullptr);
  }
  head_forward(model_, hidden_.data(), 1, logits_.data());
  ++pos_;
  return logits_;
}

}  // namespace shardq
