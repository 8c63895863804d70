// fp16 / bf16 conversions against the IEEE definitions, bit for bit.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/dtype.hpp"

namespace shardq {
namespace {

// Reference: decode a binary16 pattern by its definition, in double.
double fp16_value_ref(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v;
  if (exp == 0) v = std::ldexp(mant, -24);
  else if (exp == 31) v = mant ? std::nan("") : INFINITY;
  else v = std::ldexp(1024 + mant, exp - 25);
  return sign ? -v : v;
}

TEST(Dtype, Fp16DecodeEveryPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const double ref = fp16_value_ref(static_cast<uint16_t>(h));
    const float got = fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(ref)) {
      EXPECT_TRUE(std::isnan(got)) << h;
    } else {
      ASSERT_EQ(static_cast<double>(got), ref) << "pattern " << h;
    }
  }
}

TEST(Dtype, Fp16EncodeRoundTripsEveryFinitePattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(fp32_to_fp16(f), h) << "pattern " << h;
  }
}

TEST(Dtype, Fp16EncodeRoundsToNearestEven) {
  // Exhaustive over fp32 in a sampled stride: the result must be the nearest fp16, ties even.
  for (uint64_t x = 0; x < 0x7f800000ull; x += 4099) {
    const float f = std::bit_cast<float>(static_cast<uint32_t>(x));
    const uint16_t h = fp32_to_fp16(f);
    const double v = fp16_value_ref(h);
    if (std::isinf(v)) {
      ASSERT_GE(f, 65520.0f);
      continue;
    }
    const double up = fp16_value_ref(static_cast<uint16_t>(h + 1));
    const double down = h == 0 ? -fp16_value_ref(1) : fp16_value_ref(static_cast<uint16_t>(h - 1));
    const double err = std::abs(v - f);
    ASSERT_LE(err, std::abs(up - f)) << f;
    ASSERT_LE(err, std::abs(down - f)) << f;
    if (err == std::abs(up - f) || err == std::abs(down - f)) {
      ASSERT_EQ(h & 1, 0) << f;
    }
  }
}

TEST(Dtype, Bf16RoundsToNearestEven) {
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie -> even
  EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x3f808001u)), 0x3f81);
  EXPECT_EQ(bf16_to_fp32(0xc000), -2.0f);
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

}  // namespace
}  // namespace shardq
