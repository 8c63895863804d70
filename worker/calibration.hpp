// Calibration: the token windows that flow through the model, and the per-layer statistics
// accumulated from them (the GPTQ Hessians of the four linear groups and the LIM score).
//
// Windows. The calibration token stream is built like the evaluation stream (document_stream
// in eval.hpp: split on "<|endoftext|>", strip, BOS + ids, concatenated), or read from a
// `tokens` file (little-endian uint32). Sample i is stream[start_i : start_i + seq_len] with
// start_i drawn uniformly from [0, |stream| − seq_len]: a window starts wherever it falls,
// mid-document or on a BOS, as GPTQ's reference sampling of random C4 crops does. The draws
// are splitmix64 (Steele et al. 2014) seeded with `seed`, mapped to the range by the
// multiply-shift start = (r · range) >> 64 (Lemire 2019; bias below range/2^64) — written out
// here because std::uniform_int_distribution is implementation-defined, and the same spec
// must give the same windows with any standard library.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/tokenizer.hpp"
#include "kernels/cpu/hessian.hpp"
#include "worker/forward.hpp"
#include "worker/importance.hpp"

namespace shardq {

// The calibration token stream of `path`: format "text" (tokenized with `tokenizer`) or
// "tokens" (uint32 ids checked against `vocab_size`); spec_error names calibration.format.
std::vector<int32_t> calibration_stream(const std::filesystem::path& path, const std::string& format,
                                        const Tokenizer* tokenizer, int vocab_size);

// `samples` windows of `seq_len` tokens, concatenated [samples * seq_len]. Throws spec_error
// (calibration.seq_len) when the stream is shorter than one window.
std::vector<int32_t> calibration_windows(const std::vector<int32_t>& stream, int samples, int seq_len,
                                         uint64_t seed);

// splitmix64: the generator above, exposed for tests and for other seeded choices.
uint64_t splitmix64_next(uint64_t& state);
// Uniform integer in [0, range) from one draw (multiply-shift).
uint64_t uniform_below(uint64_t draw, uint64_t range);

// Statistics of one decoder layer over the calibration set. forward() runs the layer on a
// micro-batch in place and adds to every accumulator; merge() combines the statistics of
// different micro-batches (other ranks) exactly.
class LayerCalibration {
 public:
  LayerCalibration() = default;
  explicit LayerCalibration(const ModelConfig& config);

  void forward(const ModelConfig& config, const LayerWeights& weights, float* hidden, int n_seq, int seq_len);
  void merge(const LayerCalibration& other);

  cpu::HessianAccumulator attn_in;  // shared by q_proj, k_proj, v_proj
  cpu::HessianAccumulator o_in;     // o_proj
  cpu::HessianAccumulator mlp_in;   // shared by gate_proj, up_proj
  cpu::HessianAccumulator down_in;  // down_proj
  LimAccumulator lim;
};

}  // namespace shardq
