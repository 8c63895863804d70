// Bit packing of quantization codes into qweight rows (layout: kernels/quant_types.hpp):
// each row is a little-endian bit stream, code c at bits [c*bits, (c+1)*bits).
// Test: shardq_unit_tests --gtest_filter='Pack*'.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace shardq::cpu {

int64_t packed_words_per_row(int64_t cols, int bits);
// Packs one row of `cols` codes (each < 2^bits) into `words` (packed_words_per_row words,
// overwritten). Throws shardq::error on a code out of range.
void pack_row(const uint8_t* codes, int64_t cols, int bits, uint32_t* words);
void unpack_row(const uint32_t* words, int64_t cols, int bits, uint8_t* codes);

// codes [rows, cols] row-major -> qweight [rows, words_per_row]; bits 2, 3, 4 or 8.
std::vector<uint32_t> pack_codes(std::span<const uint8_t> codes, int64_t rows, int64_t cols, int bits);
std::vector<uint8_t> unpack_codes(std::span<const uint32_t> qweight, int64_t rows, int64_t cols, int bits);

}  // namespace shardq::cpu
