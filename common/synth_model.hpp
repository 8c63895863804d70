// Deterministic synthetic LlamaForCausalLM checkpoints (`shardq synth`), for scale and speed
// tests without downloading weights.
//
// Every value is a pure function of (seed, tensor name, element index): a counter-based RNG
// (the splitmix64 output function applied to key + (index + 1) * golden gamma) feeds an
// Irwin-Hall(4) approximation of N(0, 1). So the bytes do not depend on how tensors are
// split into shards or how the writer chunks them, and any piece can be generated alone,
// which lets a 2-billion-parameter model stream to disk through a few MB of memory.
//
// Statistics mimic trained Llama weights where quantizers care:
//   linear W [rows = out, cols = in]: z * row_scale[r] * col_factor[c] / sqrt(in), with
//     row_scale log-normal (sigma 0.25) per output channel and col_factor 4..12 on ~0.8% of
//     input columns, at least one (outlier features, Dettmers et al. 2022 "LLM.int8()"); the outlier
//     columns depend on (seed, in) only, so every linear reading the residual stream shares
//     them, as real outlier dimensions do;
//   embed_tokens: 0.02 * z * col_factor (HF init std); RMSNorm weights: 1 + 0.05 * z.
// No tokenizer is written: synthetic models are driven by token files
// (calibration.format "tokens") or a byte-level tokenizer.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/dtype.hpp"
#include "common/model_config.hpp"
#include "common/safetensors.hpp"

namespace shardq {

struct SynthOptions {
  int layers = 2;
  int hidden = 64;
  int intermediate = 172;
  int heads = 4;
  int kv_heads = 2;
  int vocab = 256;
  int context = 2048;  // max_position_embeddings
  uint64_t seed = 0;
  dtype type = dtype::f16;
  uint64_t max_shard_bytes = uint64_t{2} << 30;  // a tensor larger than this gets a shard alone
};

struct SynthSummary {
  int64_t params = 0;
  uint64_t bytes = 0;               // tensor data bytes (the index's total_size)
  std::vector<std::string> files;   // safetensors files written, in order
};

// config.json of the synthetic model (LlamaForCausalLM, untied embeddings); throws
// spec_error naming the option when the shape is invalid.
ModelConfig synth_config(const SynthOptions& options);
// Every tensor in file order, each with a fill function generating its values.
std::vector<TensorToWrite> synth_tensors(const SynthOptions& options);
// Writes config.json, the safetensors shard(s) and, with more than one shard,
// model.safetensors.index.json into `output_dir` (created; must not already hold a model).
SynthSummary synth_model_write(const SynthOptions& options, const std::filesystem::path& output_dir);

}  // namespace shardq
