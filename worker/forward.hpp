// Forward pass of the Llama-family decoder (LlamaForCausalLM / Mistral / Qwen2) on the CPU:
// embedding → per layer [RMSNorm → q/k/v (+bias) → RoPE → causal GQA attention → o_proj →
// residual → RMSNorm → SwiGLU MLP → residual] → final RMSNorm → lm_head.
//
// Layer at a time, so a rank runs any contiguous range of layers on the hidden states it
// receives. A batch is n_seq independent windows of seq_len tokens (positions restart at 0 in
// each window); hidden states are row-major [n_tokens = n_seq*seq_len, hidden] fp32.
// The KV-cached single-token path (Decoder) serves generation, O(pos) work per token.
// Kernels: kernels/cpu/forward_ops.hpp; reference: kernels/ref/forward_ref.hpp; tests:
// `shardq_unit_tests --gtest_filter='Forward*'`; benchmark: bench_forward.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/tensor.hpp"
#include "worker/llama_weights.hpp"

namespace shardq {

// The inputs of each linear group of one layer, filled by layer_forward when asked for:
// the calibration statistics (Hessians) are accumulated from these.
struct LayerTaps {
  Tensor attn_in;  // RMSNorm'ed input shared by q/k/v      [n_tokens, hidden]
  Tensor o_in;     // attention output, input of o_proj     [n_tokens, q_dim]
  Tensor mlp_in;   // RMSNorm'ed input shared by gate/up    [n_tokens, hidden]
  Tensor down_in;  // silu(gate) * up, input of down_proj   [n_tokens, intermediate]
};

// hidden [n_tokens, hidden] ← embed_tokens[tokens]. Throws spec_error on an id outside the vocab.
void embed(const ModelWeights& model, const int32_t* tokens, int64_t n_tokens, float* hidden);

// One decoder layer in place on hidden [n_seq*seq_len, hidden]; `taps` (optional) receives the
// linear inputs.
void layer_forward(const ModelConfig& config, const LayerWeights& weights, float* hidden, int n_seq,
                   int seq_len, LayerTaps* taps = nullptr);

// logits [n_tokens, vocab] = lm_head(RMSNorm(hidden)); `hidden` is left unchanged.
void head_forward(const ModelWeights& model, const float* hidden, int64_t n_tokens, float* logits);

// A layer replaced for one forward (measured sensitivity: layer `layer` runs with `weights`).
struct LayerOverride {
  int layer = -1;
  const LayerWeights* weights = nullptr;
};

// Whole model (all layers loaded, embedding and head present): logits [n_seq*seq_len, vocab].
Tensor model_forward(const ModelWeights& model, std::span<const int32_t> tokens, int n_seq, int seq_len,
                     const LayerOverride& override_layer = {});

// KV-cached incremental decoding for generation: step(token) runs the token at position pos()
// (0, 1, ...) and returns its logits [vocab]; up to max_seq positions.
class Decoder {
 public:
  Decoder(const ModelWeights& model, int max_seq);
  std::span<const float> step(int32_t token);
  int pos() const { return pos_; }
  int max_seq() const { return max_seq_; }

 private:
  const ModelWeights& model_;
  int max_seq_;
  int pos_ = 0;
  std::vector<std::vector<float>> k_cache_;  // per layer [max_seq, kv_dim]
  std::vector<std::vector<float>> v_cache_;
  std::vector<float> hidden_;
  std::vector<float> logits_;
};

}  // namespace shardq
