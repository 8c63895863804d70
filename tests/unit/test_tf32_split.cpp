// The 3xTF32 split (kernels/cuda/tf32_split.hpp) on the host: round_to_tf32 against the
// definition (the nearer of the two TF32 neighbours, exact in double, ties away from zero),
// the split's error bound, and the scheme's accuracy with an emulated tensor core (products of
// TF32 numbers exact, fp32 accumulation) against fp32 and one-pass TF32 dot products.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cuda/tf32_split.hpp"

namespace shardq {
namespace {

using cuda::round_to_tf32;
using cuda::tf32_split;

constexpr uint32_t low_bits = 0x1fffu;

bool finite_bits(uint32_t u) { return (u & 0x7f800000u) != 0x7f800000u; }

// The definition: of the TF32 numbers just below and just above |x| (same sign), the nearer;
// on a tie the one away from zero; one past the largest finite TF32 number is not a choice.
float tf32_ref(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  if (!finite_bits(u)) return x;
  const uint32_t down = u & ~low_bits, up = down + 0x2000u;
  if ((u & low_bits) == 0 || !finite_bits(up)) return std::bit_cast<float>(down);
  const double below = std::fabs(static_cast<double>(x) - std::bit_cast<float>(down));
  const double above = std::fabs(static_cast<double>(std::bit_cast<float>(up)) - x);
  return std::bit_cast<float>(above <= below ? up : down);
}

void expect_same_bits(float got, float want, uint32_t input) {
  EXPECT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want)) << "input bits 0x" << std::hex << input;
}

TEST(Tf32Split, RoundingMatchesDefinitionOnRandomBitPatterns) {
  std::mt19937 rng(11);
  for (int i = 0; i < 2'000'000; ++i) {
    const uint32_t u = static_cast<uint32_t>(rng());
    const float x = std::bit_cast<float>(u);
    const float got = round_to_tf32(x);
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(got));
      continue;
    }
    expect_same_bits(got, tf32_ref(x), u);
    ASSERT_EQ(std::bit_cast<uint32_t>(got) & low_bits, 0u);
  }
}

TEST(Tf32Split, RoundingEdgeCases) {
  const float max = std::numeric_limits<float>::max(), inf = std::numeric_limits<float>::infinity();
  for (const uint32_t u : {0x00000000u, 0x80000000u, 0x00000001u, 0x00001000u, 0x00000fffu, 0x007fffffu, 0x3f800000u,
                           0x3f801000u, 0x3f803000u, 0x3f800fffu, 0xbf801000u, 0x3fffffffu, 0x7f7fffffu, 0xff7fffffu,
                           0x7f7fe000u, 0x7f7ff000u})
    expect_same_bits(round_to_tf32(std::bit_cast<float>(u)), tf32_ref(std::bit_cast<float>(u)), u);
  // Ties go away from zero: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
  EXPECT_EQ(round_to_tf32(1.0f + 0x1p-11f), 1.0f + 0x1p-10f);
  EXPECT_EQ(round_to_tf32(-1.0f - 0x1p-11f), -1.0f - 0x1p-10f);
  // Finite stays finite; inf stays inf.
  EXPECT_EQ(round_to_tf32(max), std::bit_cast<float>(0x7f7fe000u));
  EXPECT_EQ(round_to_tf32(inf), inf);
  EXPECT_EQ(round_to_tf32(-inf), -inf);
}

TEST(Tf32Split, SplitIsExactToTwoToTheMinus21) {
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  std::uniform_int_distribution<int> exponent(-100, 100);
  for (int i = 0; i < 200'000; ++i) {
    const float x = std::ldexp(mantissa(rng), exponent(rng)) * (i % 2 ? -1.0f : 1.0f);
    const cuda::Tf32Pair p = tf32_split(x);
    ASSERT_EQ(std::bit_cast<uint32_t>(p.big) & low_bits, 0u);
    ASSERT_EQ(std::bit_cast<uint32_t>(p.small) & low_bits, 0u);
    const double rest = static_cast<double>(x) - p.big - p.small;
    ASSERT_LE(std::fabs(rest), std::ldexp(std::fabs(static_cast<double>(x)), -21)) << x;
    ASSERT_LE(std::fabs(static_cast<double>(x) - p.big), std::ldexp(std::fabs(static_cast<double>(x)), -11)) << x;
  }
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(tf32_split(inf).big, inf);
  EXPECT_EQ(tf32_split(inf).small, 0.0f);
  EXPECT_TRUE(std::isnan(tf32_split(std::nanf("")).big));
  EXPECT_EQ(tf32_split(std::nanf("")).small, 0.0f);
  EXPECT_EQ(tf32_split(0.0f).big, 0.0f);
  EXPECT_EQ(tf32_split(0.0f).small, 0.0f);
}

// One dot product as a tensor core computes it from TF32 operands: the products are exact in
// fp32 (≤ 22 significant bits), the accumulation is fp32.
float dot_exact_products(const std::vector<float>& a, const std::vector<float>& b) {
  float s = 0.0f;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// The scheme of Matmul::gemm's tf32x3 path with an emulated tensor core: its error stays
// within a small factor of fp32's, a one-pass TF32 product's is far larger.
TEST(Tf32Split, ThreeProductsRecoverFp32Accuracy) {
  std::mt19937 rng(13);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  constexpr int k = 4096, trials = 200;
  double err_fp32 = 0.0, err_tf32 = 0.0, err_3x = 0.0;
  for (int t = 0; t < trials; ++t) {
    std::vector<float> a(k), b(k), ab(k), as(k), bb(k), bs(k);
    double exact = 0.0;
    for (int i = 0; i < k; ++i) {
      a[i] = nd(rng);
      b[i] = nd(rng);
      exact += static_cast<double>(a[i]) * b[i];
      const cuda::Tf32Pair pa = tf32_split(a[i]), pb = tf32_split(b[i]);
      ab[i] = pa.big, as[i] = pa.small, bb[i] = pb.big, bs[i] = pb.small;
    }
    float fp32 = 0.0f;
    for (int i = 0; i < k; ++i) fp32 += a[i] * b[i];
    const float tf32 = dot_exact_products(ab, bb);
    float three = dot_exact_products(as, bb);
    three += dot_exact_products(ab, bs);
    three += dot_exact_products(ab, bb);
    err_fp32 += std::fabs(fp32 - exact);
    err_tf32 += std::fabs(tf32 - exact);
    err_3x += std::fabs(three - exact);
  }
  std::printf("mean |error| over %d dot products of %d: fp32 %.3g, 3xTF32 %.3g, TF32 %.3g\n", trials, k,
              err_fp32 / trials, err_3x / trials, err_tf32 / trials);
  EXPECT_LE(err_3x, 2.0 * err_fp32);
  EXPECT_GE(err_tf32, 20.0 * err_3x);
}

}  // namespace
}  // namespace shardq
