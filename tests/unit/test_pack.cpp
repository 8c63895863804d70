// Bit packing of codes into qweight (layout in kernels/quant_types.hpp): round trips for
// every width and awkward column counts, and the exact bit positions against a naive bit
// stream.
#include <gtest/gtest.h>

#include <random>
#include <tuple>
#include <vector>

#include "common/error.hpp"
#include "kernels/cpu/pack.hpp"

namespace shardq {
namespace {

class Pack : public ::testing::TestWithParam<std::tuple<int, int64_t, int64_t>> {};

TEST_P(Pack, RoundTripsAndMatchesNaiveBitStream) {
  const auto [bits, rows, cols] = GetParam();
  std::mt19937 gen(bits * 1000 + cols);
  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
  for (uint8_t& c : codes) c = static_cast<uint8_t>(gen() & ((1u << bits) - 1u));
  if (!codes.empty()) codes[0] = static_cast<uint8_t>((1u << bits) - 1u);  // all ones at the edge
  const std::vector<uint32_t> packed = cpu::pack_codes(codes, rows, cols, bits);
  const int64_t wpr = (cols * bits + 31) / 32;
  ASSERT_EQ(packed.size(), static_cast<size_t>(rows * wpr));
  EXPECT_EQ(cpu::unpack_codes(packed, rows, cols, bits), codes);
  // naive: bit b of the row stream is bit (b % 32) of word b / 32; code c is bits [c*bits, (c+1)*bits)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < wpr * 32; ++b) {
      const int64_t c = b / bits;
      const uint32_t want = c < cols ? (codes[r * cols + c] >> (b % bits)) & 1u : 0u;
      const uint32_t got = (packed[r * wpr + b / 32] >> (b % 32)) & 1u;
      ASSERT_EQ(got, want) << "row " << r << " bit " << b;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Widths, Pack,
                         ::testing::Combine(::testing::Values(2, 3, 4, 8), ::testing::Values<int64_t>(1, 3),
                                            ::testing::Values<int64_t>(1, 7, 17, 32, 65, 127, 172)));

TEST(PackLayout, PinnedWords) {
  std::vector<uint8_t> c4 = {0, 1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(cpu::pack_codes(c4, 1, 9, 4), (std::vector<uint32_t>{0x76543210u, 0x8u}));
  // 3-bit: code 10 occupies bits 30..32 and straddles into word 1
  std::vector<uint8_t> c3(11, 0);
  c3[10] = 0b111;
  EXPECT_EQ(cpu::pack_codes(c3, 1, 11, 3), (std::vector<uint32_t>{0xC0000000u, 0x1u}));
  std::vector<uint8_t> c8 = {0x11, 0x22, 0x33, 0x44, 0x55};
  EXPECT_EQ(cpu::pack_codes(c8, 1, 5, 8), (std::vector<uint32_t>{0x44332211u, 0x55u}));
  std::vector<uint8_t> c2 = {3, 0, 1, 2};
  EXPECT_EQ(cpu::pack_codes(c2, 1, 4, 2), (std::vector<uint32_t>{0b10010011u}));
}

TEST(PackLayout, RejectsBadInput) {
  std::vector<uint8_t> codes = {16};
  EXPECT_THROW(cpu::pack_codes(codes, 1, 1, 4), error);
  EXPECT_THROW(cpu::pack_codes(codes, 1, 1, 5), error);
  EXPECT_THROW(cpu::pack_codes(codes, 1, 2, 8), error);
  std::vector<uint32_t> words = {0};
  EXPECT_THROW(cpu::unpack_codes(words, 2, 4, 4), error);
}

}  // namespace
}  // namespace shardq
