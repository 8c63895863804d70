// NF4 and int8 weight quantization against naive references written here: the NF4 levels
// against bitsandbytes' published table (and QLoRA's quantile construction), codes and fp16
// absmax scales, int8 vector-wise codes and fp16 outlier columns, and dequantization.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "common/dtype.hpp"
#include "kernels/cpu/nf4.hpp"
#include "kernels/cpu/pack.hpp"
#include "kernels/quantize.hpp"

namespace shardq {
namespace {

// bitsandbytes csrc/kernels.cu, `nf4_data` (as printed there; also QLoRA Appendix E).
const double bnb_nf4_table[16] = {-1.0,
                                  -0.6961928009986877,
                                  -0.5250730514526367,
                                  -0.39491748809814453,
                                  -0.28444138169288635,
                                  -0.18477343022823334,
                                  -0.09105003625154495,
                                  0.0,
                                  0.07958029955625534,
                                  0.16093020141124725,
                                  0.24611230194568634,
                                  0.33791524171829224,
                                  0.44070982933044434,
                                  0.5626170039176941,
                                  0.7229568362236023,
                                  1.0};

TEST(Nf4Levels, EqualBitsandbytesTableToTheLastDigit) {
  for (int k = 0; k < 16; ++k) EXPECT_EQ(static_cast<double>(nf4_levels[k]), bnb_nf4_table[k]) << "level " << k;
}

// Φ⁻¹ by bisection on Φ(x) = erfc(-x/√2)/2.
double normal_ppf(double p) {
  double lo = -10.0, hi = 10.0;
  for (int it = 0; it < 200; ++it) {
    const double mid = 0.5 * (lo + hi);
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

TEST(Nf4Levels, FollowQloraQuantileConstruction) {
  // bitsandbytes create_normal_map(offset=0.9677083): 8 positive quantiles of
  // linspace(offset, 0.5, 9)[:-1], 7 negative of linspace(offset, 0.5, 8)[:-1], and 0,
  // normalised by the largest.
  const double offset = 0.9677083;
  std::vector<double> v = {0.0};
  for (int i = 0; i < 8; ++i) v.push_back(normal_ppf(offset + (0.5 - offset) * i / 8.0));
  for (int i = 0; i < 7; ++i) v.push_back(-normal_ppf(offset + (0.5 - offset) * i / 7.0));
  std::sort(v.begin(), v.end());
  const double top = v.back();
  for (int k = 0; k < 16; ++k) EXPECT_NEAR(nf4_levels[k], v[k] / top, 2e-6) << "level " << k;
}

uint8_t nearest_level_ref(double x) {
  int best = 0;
  for (int k = 1; k < 16; ++k)
    if (std::fabs(x - nf4_levels[k]) < std::fabs(x - nf4_levels[best])) best = k;
  return static_cast<uint8_t>(best);
}

Tensor random_weight(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  Tensor w({rows, cols});
  for (float& v : w.data) v = nd(gen);
  if (rows > 2)
    for (int64_t c = 0; c < cols; ++c) w.at(2, c) = 0.0f;
  return w;
}

const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1}, {3, 7}, {64, 17}, {130, 65}, {3, 127}, {64, 172}};

class Nf4 : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {};

TEST_P(Nf4, MatchesNaiveBlockAbsmaxNearestLevel) {
  const auto [rows, cols] = GetParam();
  const Tensor w = random_weight(rows, cols, static_cast<uint32_t>(rows * 31 + cols));
  QuantConfig cfg;
  cfg.method = quant_method::nf4;
  const QuantizedLinear q = quantize_linear(w, Tensor{}, cfg);
  EXPECT_EQ(q.bits, 4);
  EXPECT_EQ(q.group_size, 64);
  EXPECT_TRUE(q.zeros.empty());
  const int64_t n_blocks = (cols + 63) / 64;
  ASSERT_EQ(q.scales.size(), static_cast<size_t>(rows * n_blocks));
  const std::vector<uint8_t> codes = cpu::unpack_codes(q.qweight, rows, cols, 4);
  const Tensor d = dequantize(q);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < n_blocks; ++b) {
      double absmax = 0.0;
      for (int64_t c = b * 64; c < std::min(cols, b * 64 + 64); ++c) absmax = std::max(absmax, double{std::fabs(w.at(r, c))});
      const float scale = round_to_fp16(static_cast<float>(absmax));
      ASSERT_EQ(fp16_to_fp32(q.scales[r * n_blocks + b]), scale);
      for (int64_t c = b * 64; c < std::min(cols, b * 64 + 64); ++c) {
        const uint8_t want = scale > 0.0f ? nearest_level_ref(std::clamp(w.at(r, c) / scale, -1.0f, 1.0f)) : 7;
        ASSERT_EQ(codes[r * cols + c], want) << "row " << r << " col " << c;
        ASSERT_EQ(d.at(r, c), scale * nf4_levels[want]);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, Nf4, ::testing::ValuesIn(shapes));

TEST(Nf4Code, MidpointsTakeTheLowerLevel) {
  for (int k = 1; k < 16; ++k) {
    const double mid = 0.5 * (double{nf4_levels[k - 1]} + nf4_levels[k]);
    EXPECT_EQ(cpu::nf4_code(nf4_levels[k]), k);
    EXPECT_EQ(cpu::nf4_code(std::nextafter(static_cast<float>(mid), 2.0f)), mid < std::nextafter(static_cast<float>(mid), 2.0f) ? k : k - 1);
  }
  EXPECT_EQ(cpu::nf4_code(-1.0f), 0);
  EXPECT_EQ(cpu::nf4_code(0.0f), 7);
}

class Int8 : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {};

TEST_P(Int8, MatchesNaiveVectorWiseWithOutliers) {
  const auto [rows, cols] = GetParam();
  Tensor w = random_weight(rows, cols, static_cast<uint32_t>(rows * 17 + cols));
  if (cols > 4) w.at(0, 4) = 1.5f;  // an outlier column
  for (float threshold : {0.0f, 0.5f}) {
    QuantConfig cfg;
    cfg.method = quant_method::int8;
    cfg.int8_outlier_threshold = threshold;
    const QuantizedLinear q = quantize_linear(w, Tensor{}, cfg);
    EXPECT_EQ(q.bits, 8);
    EXPECT_EQ(q.group_size, -1);
    std::vector<int32_t> want_outliers;
    for (int64_t c = 0; c < cols && threshold > 0.0f; ++c) {
      float m = 0.0f;
      for (int64_t r = 0; r < rows; ++r) m = std::max(m, std::fabs(w.at(r, c)));
      if (m > threshold) want_outliers.push_back(static_cast<int32_t>(c));
    }
    ASSERT_EQ(q.outlier_cols, want_outliers);
    if (threshold > 0.0f && cols > 4) {
      EXPECT_EQ(want_outliers, std::vector<int32_t>{4});
    }
    const std::vector<uint8_t> codes = cpu::unpack_codes(q.qweight, rows, cols, 8);
    const Tensor d = dequantize(q);
    for (int64_t r = 0; r < rows; ++r) {
      auto is_out = [&](int64_t c) { return std::find(want_outliers.begin(), want_outliers.end(), c) != want_outliers.end(); };
      float absmax = 0.0f;
      for (int64_t c = 0; c < cols; ++c)
        if (!is_out(c)) absmax = std::max(absmax, std::fabs(w.at(r, c)));
      float scale = 0.0f;  // the smallest fp16 >= absmax / 127
      if (absmax > 0.0f)
        for (uint32_t h = 1; h < 0x7c00 && scale < absmax / 127.0f; ++h) scale = fp16_to_fp32(static_cast<uint16_t>(h));
      ASSERT_EQ(fp16_to_fp32(q.scales[r]), scale) << "row " << r;
      ASSERT_EQ(q.zeros[r], 128);
      for (int64_t c = 0; c < cols; ++c) {
        if (is_out(c)) {
          ASSERT_EQ(codes[r * cols + c], 128);
          ASSERT_EQ(d.at(r, c), round_to_fp16(w.at(r, c)));
          continue;
        }
        const float v = scale > 0.0f ? std::clamp(std::nearbyint(w.at(r, c) / scale), -127.0f, 127.0f) : 0.0f;
        ASSERT_EQ(codes[r * cols + c], static_cast<int>(v) + 128) << "row " << r << " col " << c;
        ASSERT_EQ(d.at(r, c), scale * v);
        EXPECT_LE(std::fabs(d.at(r, c) - w.at(r, c)), 0.5f * scale * (1.0f + 1e-5f));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, Int8, ::testing::ValuesIn(shapes));

}  // namespace
}  // namespace shardq
