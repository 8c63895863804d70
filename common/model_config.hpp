// config.json of the Llama family: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM
// (q/k/v biases). GQA, tied embeddings, explicit head_dim and rope_theta are supported;
// anything this version cannot run (any rope_scaling, a sliding window shorter than the
// context, an activation other than silu, Llama attention/MLP biases) is refused with an
// unsupported_error naming the key. Keys a file may omit take the Hugging Face defaults
// (num_key_value_heads = num_attention_heads, head_dim = hidden / heads, rms_norm_eps 1e-6,
// rope_theta 10000, max_position_embeddings 2048, bos 1, eos 2; a list of eos ids gives the first).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace shardq {

struct ModelConfig {
  std::string architecture;  // "LlamaForCausalLM", ...
  std::string model_type;    // "llama", "mistral", "qwen2"
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // hidden_size / num_heads unless given
  int vocab_size = 0;
  int max_position_embeddings = 0;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2)
  int bos_token_id = 1;
  int eos_token_id = 2;
  std::string torch_dtype = "float32";
  nlohmann::json raw;  // the file as read

  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
  // Weight parameters of one decoder layer's linears (q,k,v,o,gate,up,down; biases not counted).
  int64_t layer_linear_params() const;
};

// Throws io_error (unreadable, missing key, wrong type: "config.json (<context>): missing key
// 'hidden_size'") or unsupported_error. `context` is the file path in messages.
ModelConfig model_config_from_json(const nlohmann::json& j, const std::string& context);
ModelConfig model_config_load(const std::filesystem::path& model_dir);
nlohmann::json model_config_to_json(const ModelConfig& c);  // HF-style config.json

// HF tensor names of layer `l`.
std::string layer_prefix(int layer);  // "model.layers.{l}."

}  // namespace shardq
