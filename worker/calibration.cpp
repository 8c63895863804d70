// Calibration windows and per-layer statistics; see calibration.hpp.
#include "worker/calibration.hpp"

#include <fmt/format.h>

#include "common/error.hpp"
#include "worker/eval.hpp"

#include <fstream>
#include <sstream>

namespace shardq {

uint64_t splitmix64_next(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t uniform_below(uint64_t draw, uint64_t range) {
  __extension__ typedef unsigned __int128 u128;
  return static_cast<uint64_t>((static_cast<u128>(draw) * range) >> 64);
}

std::vector<int32_t> calibration_stream(const std::filesystem::path& path, const std::string& format,
                                        const Tokenizer* tokenizer, int vocab_size) {
  if (format == "tokens") return token_file_read(path, vocab_size);
  if (format != "text")
    throw spec_error("calibration.format", fmt::format("'{}' is not one of text, tokens", format));
  if (!tokenizer) throw spec_error("calibration.format", "text calibration needs the model's tokenizer");
  return document_stream(*tokenizer, text_file_read(path, "calibration file"));
}

std::vector<int32_t> calibration_windows(const std::vector<int32_t>& stream, int samples, int seq_len, uint64_t seed) {
  if (seq_len < 1) throw spec_error("calibration.seq_len", fmt::format("must be positive (got {})", seq_len));
  if (static_cast<int64_t>(stream.size()) < seq_len)
    throw spec_error("calibration.seq_len", fmt::format("the calibration stream has {} tokens, fewer than one window of {}",
                                                        stream.size(), seq_len));
  const uint64_t range = stream.size() - static_cast<uint64_t>(seq_len) + 1;
  uint64_t state = seed;
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(samples) * seq_len);
  for (int i = 0; i < samples; ++i) {
    const uint64_t start = uniform_below(splitmix64_next(state), range);
    out.insert(out.end(), stream.begin() + static_cast<int64_t>(start), stream.begin() + static_cast<int64_t>(start) + seq_len);
  }
  return out;
}

LayerCalibration::LayerCalibration(const ModelConfig& c)
    : attn_in(c.hidden_size), o_in(c.q_dim()), mlp_in(c.hidden_size), down_in(c.intermediate_size) {}

void LayerCalibration::forward(const ModelConfig& c, const LayerWeights& w, float* hidden, int n_seq, int seq_len) {
  const int64_t n = static_cast<int64_t>(n_seq) * seq_len;
  const std::vector<float> h_in(hidden, hidden + n * c.hidden_size);
  LayerTaps taps;
  layer_forward(c, w, hidden, n_seq, seq_len, &taps);
  attn_in.add(taps.attn_in.ptr(), n);
  o_in.add(taps.o_in.ptr(), n);
  mlp_in.add(taps.mlp_in.ptr(), n);
  down_in.add(taps.down_in.ptr(), n);
  lim.add(h_in.data(), hidden, n, c.hidden_size);
}

void LayerCalibration::merge(const LayerCalibration& other) {
  attn_in.merge(other.attn_in);
  o_in.merge(other.o_in);
  mlp_in.merge(other.mlp_in);
  down_in.merge(other.down_in);
  lim.merge(other.lim);
}

}  // namespace shardq
