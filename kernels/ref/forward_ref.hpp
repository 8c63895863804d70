// Reference decoder forward pass: naive loops in double precision, obviously correct, for the
// tests only (worker/forward.cpp is the fast version). Same semantics: HF rotate-half RoPE,
// causal GQA attention in fresh windows of seq_len tokens, SwiGLU MLP, optional q/k/v biases.
#pragma once

#include <cstdint>
#include <vector>

#include "worker/llama_weights.hpp"

namespace shardq::ref {

// The linear inputs of one layer, as worker/forward.hpp's LayerTaps.
struct LayerTapsRef {
  std::vector<double> attn_in, o_in, mlp_in, down_in;
};

// hidden [n_seq*seq_len, hidden] → the layer's output (same shape).
std::vector<double> layer_forward_ref(const ModelConfig& config, const LayerWeights& weights,
                                      const std::vector<double>& hidden, int n_seq, int seq_len,
                                      LayerTapsRef* taps = nullptr);

// Hidden states entering layer 0 for `tokens`.
std::vector<double> embed_ref(const ModelWeights& model, const std::vector<int32_t>& tokens);

// Logits [n_seq*seq_len, vocab] of the whole model.
std::vector<double> model_forward_ref(const ModelWeights& model, const std::vector<int32_t>& tokens, int n_seq,
                                      int seq_len);

}  // namespace shardq::ref
