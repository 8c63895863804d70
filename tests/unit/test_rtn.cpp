// RTN on the GPTQ grid: codes, fp16 scales and zeros against a naive per-element reference
// written here, dequantize(quantize(W)) within half a grid step of W, and the relative
// output error against an explicit ‖(W−Q)Xᵀ‖² / ‖WXᵀ‖².
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include "common/dtype.hpp"
#include "common/error.hpp"
#include "kernels/cpu/pack.hpp"
#include "kernels/cpu/quant_error.hpp"
#include "kernels/quantize.hpp"

namespace shardq {
namespace {

Tensor random_weight(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  Tensor w({rows, cols});
  for (float& v : w.data) v = nd(gen);
  if (rows > 1) {
    for (int64_t c = 0; c < cols; ++c) w.at(1, c) = std::fabs(w.at(1, c));  // an all-positive row
  }
  if (rows > 2) {
    for (int64_t c = 0; c < cols; ++c) w.at(2, c) = 0.0f;  // an all-zero row
  }
  return w;
}

// The smallest fp16 value >= x (x > 0), by walking the fp16 patterns.
float fp16_at_or_above(float x) {
  for (uint32_t h = 1; h < 0x7c00; ++h)
    if (fp16_to_fp32(static_cast<uint16_t>(h)) >= x) return fp16_to_fp32(static_cast<uint16_t>(h));
  return 65504.0f;
}

using RtnParam = std::tuple<int, int, bool>;  // bits, group_size, sym
class Rtn : public ::testing::TestWithParam<RtnParam> {};

TEST_P(Rtn, MatchesNaiveGridAndStaysWithinHalfStep) {
  const auto [bits, group, sym] = GetParam();
  const float maxq = static_cast<float>((1 << bits) - 1);
  for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 7}, {64, 17}, {130, 65}, {3, 127}, {64, 172}}) {
    const Tensor w = random_weight(rows, cols, static_cast<uint32_t>(rows * 1000 + cols + bits));
    QuantConfig cfg;
    cfg.method = quant_method::rtn;
    cfg.bits = bits;
    cfg.group_size = group;
    cfg.sym = sym;
    const QuantizedLinear q = quantize_linear(w, Tensor{}, cfg);
    const int64_t gcols = group > 0 ? group : cols, n_groups = (cols + gcols - 1) / gcols;
    ASSERT_EQ(q.scales.size(), static_cast<size_t>(rows * n_groups));
    const std::vector<uint8_t> codes = cpu::unpack_codes(q.qweight, rows, cols, bits);
    const Tensor d = dequantize(q);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t g = 0; g < n_groups; ++g) {
        float xmin = 0.0f, xmax = 0.0f;
        for (int64_t c = g * gcols; c < std::min(cols, (g + 1) * gcols); ++c) {
          xmin = std::min(xmin, w.at(r, c));
          xmax = std::max(xmax, w.at(r, c));
        }
        if (sym) {
          xmax = std::max(-xmin, xmax);
          xmin = -xmax;
        }
        if (xmin == xmax) xmin = -1.0f, xmax = 1.0f;
        const float scale = fp16_at_or_above((xmax - xmin) / maxq);
        const float zero = sym ? (maxq + 1.0f) / 2.0f : std::nearbyint(-xmin / scale);
        ASSERT_EQ(fp16_to_fp32(q.scales[r * n_groups + g]), scale) << "row " << r << " group " << g;
        ASSERT_EQ(q.zeros[r * n_groups + g], zero) << "row " << r << " group " << g;
        for (int64_t c = g * gcols; c < std::min(cols, (g + 1) * gcols); ++c) {
          const float want = std::min(maxq, std::max(0.0f, std::nearbyint(w.at(r, c) / scale) + zero));
          ASSERT_EQ(codes[r * cols + c], want) << "row " << r << " col " << c;
          ASSERT_EQ(d.at(r, c), scale * (want - zero));
          // every weight lies inside the grid's range, so the error is at most half a step
          EXPECT_LE(std::fabs(d.at(r, c) - w.at(r, c)), 0.5f * scale * (1.0f + 1e-5f)) << "row " << r << " col " << c;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, Rtn,
                         ::testing::Combine(::testing::Values(2, 3, 4, 8), ::testing::Values(-1, 32, 128),
                                            ::testing::Bool()));

TEST(RtnConfig, RejectsOutOfRangeFields) {
  const Tensor w = random_weight(2, 4, 1);
  QuantConfig cfg;
  cfg.method = quant_method::rtn;
  cfg.bits = 6;
  try {
    quantize_linear(w, Tensor{}, cfg);
    FAIL();
  } catch (const spec_error& e) {
    EXPECT_EQ(e.field(), "quant.bits");
  }
  cfg.bits = 4;
  cfg.group_size = 0;
  EXPECT_THROW(quantize_linear(w, Tensor{}, cfg), spec_error);
  cfg.group_size = 4;
  Tensor bad = w;
  bad.data[3] = NAN;
  EXPECT_THROW(quantize_linear(bad, Tensor{}, cfg), error);
  QuantizedLinear q = quantize_linear(w, Tensor{}, cfg);
  q.scales.pop_back();
  EXPECT_THROW(dequantize(q), io_error);
}

class QuantError : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {};

TEST_P(QuantError, MatchesExplicitActivations) {
  const auto [rows, cols] = GetParam();
  const int64_t n_tokens = 23;
  std::mt19937 gen(static_cast<uint32_t>(rows + cols));
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<double> x(static_cast<size_t>(n_tokens * cols));
  for (double& v : x) v = nd(gen);
  Tensor h({cols, cols});
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double s = 0.0;
      for (int64_t t = 0; t < n_tokens; ++t) s += x[t * cols + i] * x[t * cols + j];
      h.at(i, j) = static_cast<float>(2.0 * s / n_tokens);
    }
  const Tensor w = random_weight(rows, cols, 3);
  QuantConfig cfg;
  cfg.method = quant_method::rtn;
  cfg.bits = 3;
  const Tensor wq = dequantize(quantize_linear(w, Tensor{}, cfg));
  double num = 0.0, den = 0.0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < n_tokens; ++t) {
      double y = 0.0, e = 0.0;
      for (int64_t c = 0; c < cols; ++c) {
        y += double{w.at(r, c)} * x[t * cols + c];
        e += (double{w.at(r, c)} - wq.at(r, c)) * x[t * cols + c];
      }
      num += e * e;
      den += y * y;
    }
  const double want = num / den;
  const double got = cpu::relative_output_error(w, wq, h);
  EXPECT_NEAR(got, want, 1e-4 * want) << "rows " << rows << " cols " << cols;
  // only the upper triangle is read
  Tensor upper = h;
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < i; ++j) upper.at(i, j) = 0.0f;
  EXPECT_EQ(cpu::relative_output_error(w, wq, upper), got);
  EXPECT_EQ(cpu::relative_output_error(w, w, h), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Shapes, QuantError,
                         ::testing::Values(std::pair<int64_t, int64_t>{1, 1}, std::pair<int64_t, int64_t>{3, 7},
                                           std::pair<int64_t, int64_t>{64, 65}, std::pair<int64_t, int64_t>{130, 172},
                                           std::pair<int64_t, int64_t>{2500, 24}));

// The traces come per 1024-row tile, each tile computed alone: any way of cutting [0, 3) into
// runs (how a job's ranks share them) gives the same traces bit for bit, and the figure is
// their sum in tile order. Tiles outside the weight are refused.
TEST(QuantErrorTiles, AnySplitGivesTheWholeBitForBit) {
  const int64_t rows = 2500, cols = 40;
  const Tensor w = random_weight(rows, cols, 11);
  Tensor h({cols, cols});
  const Tensor x = random_weight(64, cols, 12);
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double s = 0.0;
      for (int64_t t = 0; t < 64; ++t) s += double{x.at(t, i)} * x.at(t, j);
      h.at(i, j) = static_cast<float>(s / 32.0);
    }
  QuantConfig cfg;
  cfg.method = quant_method::rtn;
  const Tensor wq = dequantize(quantize_linear(w, Tensor{}, cfg));
  ASSERT_EQ(output_error_tile_count(rows), 3);
  const std::vector<OutputErrorTraces> whole = cpu::output_error_tiles(w, wq, h, 0, 3);
  ASSERT_EQ(whole.size(), 3u);
  for (const auto& [a, b] : {std::pair<int64_t, int64_t>{1, 1}, {1, 2}, {2, 2}, {0, 0}, {3, 3}}) {
    std::vector<OutputErrorTraces> joined = cpu::output_error_tiles(w, wq, h, 0, a);
    for (const auto& part : {cpu::output_error_tiles(w, wq, h, a, b), cpu::output_error_tiles(w, wq, h, b, 3)})
      joined.insert(joined.end(), part.begin(), part.end());
    ASSERT_EQ(joined.size(), 3u);
    for (size_t t = 0; t < 3; ++t) {
      EXPECT_EQ(std::bit_cast<uint64_t>(joined[t].error), std::bit_cast<uint64_t>(whole[t].error)) << a << " " << b;
      EXPECT_EQ(std::bit_cast<uint64_t>(joined[t].reference), std::bit_cast<uint64_t>(whole[t].reference));
    }
  }
  for (const OutputErrorTraces& t : whole) EXPECT_GT(t.error, 0.0);
  const double sum_error = whole[0].error + whole[1].error + whole[2].error;
  const double sum_reference = whole[0].reference + whole[1].reference + whole[2].reference;
  EXPECT_EQ(cpu::relative_output_error(w, wq, h), sum_error / sum_reference);
  EXPECT_THROW(cpu::output_error_tiles(w, wq, h, 0, 4), error);
  EXPECT_THROW(cpu::output_error_tiles(w, wq, h, 2, 1), error);
  EXPECT_THROW(cpu::output_error_tiles(w, wq, h, -1, 1), error);
}

}  // namespace
}  // namespace shardq
