// Bit packing of quantization codes (layout: kernels/quant_types.hpp).
#include "kernels/cpu/pack.hpp"

#include <fmt/format.h>

#include "common/error.hpp"

namespace shardq::cpu {
namespace {

void check_bits(int bits) {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
    throw error(fmt::format("pack: unsupported code width {} bits (2, 3, 4 or 8)", bits));
}

}  // namespace

int64_t packed_words_per_row(int64_t cols, int bits) { return (cols * bits + 31) / 32; }

void pack_row(const uint8_t* codes, int64_t cols, int bits, uint32_t* words) {
  const int64_t n_words = packed_words_per_row(cols, bits);
  for (int64_t w = 0; w < n_words; ++w) words[w] = 0;
  const uint32_t limit = 1u << bits;
  for (int64_t c = 0; c < cols; ++c) {
    const uint32_t code = codes[c];
    if (code >= limit)
      throw error(fmt::format("pack: code {} of column {} does not fit in {} bits", code, c, bits));
    const int64_t bit = c * bits;
    const int64_t w = bit >> 5;
    const int off = static_cast<int>(bit & 31);
    words[w] |= code << off;
    if (off + bits > 32) words[w + 1] |= code >> (32 - off);  // 3-bit codes straddle words
  }
}

void unpack_row(const uint32_t* words, int64_t cols, int bits, uint8_t* codes) {
  const uint32_t mask = (1u << bits) - 1u;
  for (int64_t c = 0; c < cols; ++c) {
    const int64_t bit = c * bits;
    const int64_t w = bit >> 5;
    const int off = static_cast<int>(bit & 31);
    uint32_t v = words[w] >> off;
    if (off + bits > 32) v |= words[w + 1] << (32 - off);
    codes[c] = static_cast<uint8_t>(v & mask);
  }
}

std::vector<uint32_t> pack_codes(std::span<const uint8_t> codes, int64_t rows, int64_t cols, int bits) {
  check_bits(bits);
  if (rows < 0 || cols < 0 || static_cast<int64_t>(codes.size()) != rows * cols)
    throw error(fmt::format("pack: {} codes for a [{}, {}] matrix", codes.size(), rows, cols));
  const int64_t wpr = packed_words_per_row(cols, bits);
  std::vector<uint32_t> out(static_cast<size_t>(rows * wpr));
  for (int64_t r = 0; r < rows; ++r) pack_row(codes.data() + r * cols, cols, bits, out.data() + r * wpr);
  return out;
}

std::vector<uint8_t> unpack_codes(std::span<const uint32_t> qweight, int64_t rows, int64_t cols, int bits) {
  check_bits(bits);
  const int64_t wpr = packed_words_per_row(cols, bits);
  if (rows < 0 || cols < 0 || static_cast<int64_t>(qweight.size()) != rows * wpr)
    throw error(fmt::format("unpack: qweight has {} words, a [{}, {}] {}-bit matrix needs {}",
                            qweight.size(), rows, cols, bits, rows * wpr));
  std::vector<uint8_t> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) unpack_row(qweight.data() + r * wpr, cols, bits, out.data() + r * cols);
  return out;
}

}  // namespace shardq::cpu
