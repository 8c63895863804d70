// llama2.c legacy ("version 0") checkpoints (karpathy/llama2.c run.c) and their conversion
// to a Hugging Face Llama directory (config.json, model.safetensors, tokenizer).
//
// File layout, little-endian: 7 × int32 header (dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size, seq_len; a negative vocab_size means the classifier is stored
// separately), then float32 arrays: token_embedding [vocab, dim], rms_att [L, dim],
// wq [L, dim, dim], wk [L, kv_dim, dim], wv [L, kv_dim, dim], wo [L, dim, dim],
// rms_ffn [L, dim], w1 [L, hidden, dim], w2 [L, dim, hidden], w3 [L, hidden, dim],
// rms_final [dim], freq_cis_real and freq_cis_imag [seq_len, head_dim / 2] (unused by
// run.c), and wcls [vocab, dim] only when unshared. Matrices are row-major [out, in].
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "common/dtype.hpp"
#include "common/model_config.hpp"
#include "common/tensor.hpp"

namespace shardq {

struct Llama2cConfig {
  int dim = 0;
  int hidden_dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;  // absolute value of the header field
  int seq_len = 0;
  bool shared_classifier = true;  // header vocab_size > 0

  int head_dim() const { return dim / n_heads; }
  int kv_dim() const { return n_kv_heads * head_dim(); }
};

struct Llama2cLayer {
  Tensor rms_att;  // [dim]
  Tensor wq;       // [dim, dim]
  Tensor wk;       // [kv_dim, dim]
  Tensor wv;       // [kv_dim, dim]
  Tensor wo;       // [dim, dim]
  Tensor rms_ffn;  // [dim]
  Tensor w1;       // [hidden_dim, dim]  gate
  Tensor w2;       // [dim, hidden_dim]  down
  Tensor w3;       // [hidden_dim, dim]  up
};

struct Llama2cCheckpoint {
  Llama2cConfig config;
  Tensor token_embedding;  // [vocab, dim]
  std::vector<Llama2cLayer> layers;
  Tensor rms_final;  // [dim]
  Tensor wcls;       // [vocab, dim]; empty when shared with token_embedding
};

// Exact size in bytes of a checkpoint with this header.
uint64_t llama2c_file_bytes(const Llama2cConfig& c);
// Reads and validates the header (positive sizes, heads dividing dim, even head_dim, file
// size exactly llama2c_file_bytes); throws io_error naming the file and what is wrong.
Llama2cConfig llama2c_read_config(const std::filesystem::path& path);
Llama2cCheckpoint llama2c_load(const std::filesystem::path& path);

// Reorders the rows of a q or k projection [n_heads * head_dim, in] from llama2.c's RoPE
// layout to Hugging Face's; see llama2c.cpp for the derivation.
Tensor llama2c_permute_rope_rows(const Tensor& w, int n_heads);

// The config.json values of a converted checkpoint (LlamaForCausalLM, eps 1e-5, theta 1e4,
// BOS 1, EOS 2); `type` sets torch_dtype.
ModelConfig llama2c_model_config(const Llama2cConfig& c, dtype type);

struct Llama2cConvertOptions {
  std::filesystem::path model_bin;
  std::filesystem::path tokenizer;  // tokenizer.bin (llama2.c) or *.model (SentencePiece)
  std::filesystem::path output;
  dtype type = dtype::f32;  // f32, f16 or bf16
  bool force = false;       // write into an existing non-empty directory
};
// Writes output/config.json, output/model.safetensors and output/tokenizer.bin or
// output/tokenizer.model. Inputs are read and checked (tokenizer vocabulary matching the
// checkpoint's) before anything is written; an existing non-empty output directory is an
// io_error unless `force`.
void llama2c_convert(const Llama2cConvertOptions& options);

}  // namespace shardq
