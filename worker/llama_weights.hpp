// The fp32 weights of a Llama-family model (or of a contiguous range of its decoder layers)
// as the forward pass uses them. Every source fills the same structs: the safetensors loader
// below (F32/F16/BF16 converted to fp32), the shardq checkpoint loader (dequantized linears),
// and the random builder used by tests and benchmarks.
//
// HF tensor names: model.embed_tokens.weight [vocab, hidden], model.norm.weight [hidden],
// lm_head.weight [vocab, hidden] (absent when tie_word_embeddings), and per layer l under
// "model.layers.{l}.": input_layernorm, self_attn.{q,k,v,o}_proj (+ q/k/v .bias with
// attention_bias, Qwen2), post_attention_layernorm, mlp.{gate,up,down}_proj.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "common/model_config.hpp"
#include "common/tensor.hpp"

namespace shardq {

class SafetensorsModel;

struct LayerWeights {
  Tensor attn_norm;  // input_layernorm [hidden]
  Tensor q_proj;     // [q_dim, hidden]
  Tensor k_proj;     // [kv_dim, hidden]
  Tensor v_proj;     // [kv_dim, hidden]
  Tensor o_proj;     // [hidden, q_dim]
  Tensor q_bias;     // [q_dim]; empty unless attention_bias
  Tensor k_bias;     // [kv_dim]
  Tensor v_bias;     // [kv_dim]
  Tensor ffn_norm;   // post_attention_layernorm [hidden]
  Tensor gate_proj;  // [intermediate, hidden]
  Tensor up_proj;    // [intermediate, hidden]
  Tensor down_proj;  // [hidden, intermediate]

  // The seven linears with their names relative to the layer prefix ("self_attn.q_proj",
  // ..., "mlp.down_proj"), in HF order: what quantizers iterate over.
  std::array<std::pair<const char*, const Tensor*>, 7> linears() const;
  std::array<std::pair<const char*, Tensor*>, 7> linears();
};

struct ModelWeights {
  ModelConfig config;
  int layer_begin = 0;  // layers [layer_begin, layer_end) are loaded; layers[i] is layer_begin + i
  int layer_end = 0;
  Tensor embed_tokens;  // [vocab, hidden]; empty when not loaded
  Tensor final_norm;    // [hidden]; empty when not loaded
  Tensor lm_head;       // [vocab, hidden]; empty when tied (head() is then embed_tokens)
  std::vector<LayerWeights> layers;

  const Tensor& head() const { return config.tie_word_embeddings ? embed_tokens : lm_head; }
  const LayerWeights& layer(int l) const { return layers.at(static_cast<size_t>(l - layer_begin)); }
  LayerWeights& layer(int l) { return layers.at(static_cast<size_t>(l - layer_begin)); }
  bool has_embedding() const { return !embed_tokens.empty(); }
  bool has_head() const { return !final_norm.empty() && !head().empty(); }
};

// What to load of a model: a range of decoder layers, and optionally the embedding (the first
// rank, or any rank evaluating) and the final norm + lm_head (the last rank).
struct WeightsSelection {
  int layer_begin = 0;
  int layer_end = -1;  // -1: through the last layer
  bool embedding = true;
  bool head = true;
};

// Loads layer `layer`, checking every shape against `config`; io_error names the tensor.
LayerWeights layer_weights_load(const SafetensorsModel& model, const ModelConfig& config, int layer);
// Every tensor the loaders read (all layers, embedding, final norm, lm_head unless tied) is
// present with the shape the config implies and a floating-point dtype, and no tensor
// belongs to a layer past num_hidden_layers; io_error naming the tensor and file otherwise.
// Reads headers only: a job checks this before it writes anything.
void llama_tensors_check(const SafetensorsModel& model, const ModelConfig& config);
ModelWeights model_weights_load(const SafetensorsModel& model, const ModelConfig& config,
                                const WeightsSelection& selection = {});
// A Hugging Face model directory (config.json + safetensors), or a shardq checkpoint (its
// directory with manifest.json, or its model.h5): quantized linears are dequantized, the
// config is the manifest's copy.
ModelWeights model_weights_load(const std::filesystem::path& path, const WeightsSelection& selection = {});
// Where the tokenizer of `path` lives: the model directory itself, or for a checkpoint its own
// directory when it holds tokenizer.model/.bin, else the source model path of its manifest.
std::filesystem::path model_tokenizer_dir(const std::filesystem::path& path);

// Random weights for tests and benchmarks (deterministic in `seed`): linears uniform in
// ±1/sqrt(in_features), norms 1 + small noise, biases small, embedding uniform ±1.
LayerWeights layer_weights_random(const ModelConfig& config, uint64_t seed);
ModelWeights model_weights_random(const ModelConfig& config, uint64_t seed);

}  // namespace shardq
