// LIM, ZD and measured KL sensitivity; see importance.hpp.
#include "worker/importance.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "common/error.hpp"
#include "kernels/cpu/forward_ops.hpp"
#include "worker/eval.hpp"

namespace shardq {

void LimAccumulator::add(const float* h_in, const float* h_out, int64_t n_tokens, int64_t hidden) {
  std::vector<double> cos(static_cast<size_t>(n_tokens));
  cpu::token_cosines(h_in, h_out, n_tokens, hidden, cos.data());
  add_cosines(cos);
}

void LimAccumulator::add_cosines(std::span<const double> cos) {
  for (double c : cos) cos_sum_ += static_cast<cpu::hessian_int>(std::ldexp(c, 62));
  n_tokens_ += static_cast<int64_t>(cos.size());
}

void LimAccumulator::merge_fixed(cpu::hessian_int cos_sum, int64_t n_tokens) {
  cos_sum_ += cos_sum;
  n_tokens_ += n_tokens;
}

void LimAccumulator::merge(const LimAccumulator& other) { merge_fixed(other.cos_sum_, other.n_tokens_); }

double LimAccumulator::score() const {
  if (n_tokens_ == 0) return 0.0;
  return -std::ldexp(static_cast<double>(cos_sum_), -62) / static_cast<double>(n_tokens_);
}

double zd_score(const LayerWeights& w) {
  double sum = 0;
  int64_t count = 0;
  for (const auto& [name, t] : w.linears()) {
    for (float x : t->data) sum += x;
    count += t->numel();
  }
  if (count == 0) return 0.0;
  const double mean = sum / static_cast<double>(count);
  double var = 0;
  for (const auto& [name, t] : w.linears())
    for (float x : t->data) var += (x - mean) * (x - mean);
  const double stddev = std::sqrt(var / static_cast<double>(count));
  if (stddev == 0) return 0.0;
  int64_t above = 0;
  for (const auto& [name, t] : w.linears())
    for (float x : t->data) above += std::abs(x - mean) > stddev;
  return static_cast<double>(above) / static_cast<double>(count);
}

LayerSensitivityProbe::LayerSensitivityProbe(const ModelWeights& model, std::vector<int32_t> tokens, int n_seq,
                                             int seq_len)
    : model_(model), n_seq_(n_seq), seq_len_(seq_len) {
  const int64_t n = static_cast<int64_t>(n_seq) * seq_len, h = model.config.hidden_size, vocab = model.config.vocab_size;
  if (static_cast<int64_t>(tokens.size()) != n)
    throw error(fmt::format("sensitivity probe: {} tokens given for {} windows of {}", tokens.size(), n_seq, seq_len));
  if (model.layer_begin != 0 || model.layer_end != model.config.num_layers || !model.has_embedding() || !model.has_head())
    throw error("sensitivity probe: needs the whole model loaded");
  std::vector<float> hidden(n * h);
  embed(model, tokens.data(), n, hidden.data());
  for (const LayerWeights& w : model.layers) {
    layer_inputs_.push_back(hidden);
    layer_forward(model.config, w, hidden.data(), n_seq, seq_len);
  }
  std::vector<float> logits(n * vocab);
  head_forward(model, hidden.data(), n, logits.data());
  ref_log_probs_.resize(n * vocab);
  for (int64_t t = 0; t < n; ++t) log_softmax_row(logits.data() + t * vocab, vocab, ref_log_probs_.data() + t * vocab);
}

double LayerSensitivityProbe::kl_with_layer(int layer, const LayerWeights& replacement) const {
  if (layer < 0 || layer >= model_.config.num_layers)
    throw spec_error("layer", fmt::format("layer {} outside the model's {} layers", layer, model_.config.num_layers));
  const int64_t n = static_cast<int64_t>(n_seq_) * seq_len_, vocab = model_.config.vocab_size;
  std::vector<float> hidden = layer_inputs_[layer];
  layer_forward(model_.config, replacement, hidden.data(), n_seq_, seq_len_);
  for (int l = layer + 1; l < model_.config.num_layers; ++l)
    layer_forward(model_.config, model_.layer(l), hidden.data(), n_seq_, seq_len_);
  std::vector<float> logits(n * vocab);
  head_forward(model_, hidden.data(), n, logits.data());
  std::vector<double> lp(vocab);
  double kl_sum = 0;
  for (int64_t t = 0; t < n; ++t) {
    log_softmax_row(logits.data() + t * vocab, vocab, lp.data());
    kl_sum += kl_divergence(ref_log_probs_.data() + t * vocab, lp.data(), vocab);
  }
  return n > 0 ? kl_sum / static_cast<double>(n) : 0.0;
}

double layer_replacement_kl(const ModelWeights& model, int layer, const LayerWeights& replacement,
                            const std::vector<int32_t>& tokens, int n_seq, int seq_len) {
  return LayerSensitivityProbe(model, tokens, n_seq, seq_len).kl_with_layer(layer, replacement);
}

}  // namespace shardq
