// HessianAccumulator (kernels/cpu/hessian.hpp) against the naive double reference, and the
// exactness properties the multi-rank schedules rely on: the integer sum does not depend on
// how micro-batches are grouped or merged.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/error.hpp"
#include "kernels/cpu/hessian.hpp"
#include "kernels/ref/hessian_ref.hpp"

namespace shardq {
namespace {

std::vector<float> random_activations(int64_t n, int64_t dim, uint64_t seed, bool small_integers) {
  std::mt19937_64 rng(seed);
  std::vector<float> x(n * dim);
  for (float& v : x) {
    const double u = static_cast<double>(rng() >> 11) * 0x1p-53;  // [0, 1)
    v = small_integers ? static_cast<float>(static_cast<int>(u * 15.0) - 7) : static_cast<float>(4.0 * u - 2.0);
  }
  return x;
}

void expect_same_tensor(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.shape, b.shape);
  for (size_t i = 0; i < a.data.size(); ++i) ASSERT_EQ(a.data[i], b.data[i]) << "element " << i;
}

class HessianShapes : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {};

TEST_P(HessianShapes, MatchesNaiveDouble) {
  const auto [n, dim] = GetParam();
  const std::vector<float> x = random_activations(n, dim, 7 + dim, false);
  cpu::HessianAccumulator acc(dim);
  acc.add(x.data(), n);
  const Tensor h = acc.finalize();
  const std::vector<double> ref = ref::hessian_ref(x.data(), n, dim);
  double max_ref = 0, max_err = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    max_ref = std::max(max_ref, std::abs(ref[i]));
    max_err = std::max(max_err, std::abs(h.data[i] - ref[i]));
  }
  EXPECT_LE(max_err, 1e-5 * max_ref) << "n=" << n << " dim=" << dim;
  for (int64_t i = 0; i < dim; ++i)
    for (int64_t j = 0; j < dim; ++j) ASSERT_EQ(h.at(i, j), h.at(j, i));
  EXPECT_EQ(acc.n_tokens(), n);
}

INSTANTIATE_TEST_SUITE_P(Awkward, HessianShapes,
                         ::testing::Values(std::pair<int64_t, int64_t>{1, 1}, std::pair<int64_t, int64_t>{7, 17},
                                           std::pair<int64_t, int64_t>{65, 127}, std::pair<int64_t, int64_t>{300, 172},
                                           std::pair<int64_t, int64_t>{33, 65}));

// Exact small-integer activations: every fp32 partial is exact, so 1, 3 or 7 micro-batches
// must give bit-identical H, equal to the double reference.
TEST(Hessian, MicroBatchGroupingIsExact) {
  const int64_t n = 210, dim = 37;
  const std::vector<float> x = random_activations(n, dim, 3, true);
  const std::vector<double> ref = ref::hessian_ref(x.data(), n, dim);
  Tensor first;
  for (int batches : {1, 3, 7}) {
    cpu::HessianAccumulator acc(dim);
    const int64_t step = n / batches;
    for (int b = 0; b < batches; ++b) acc.add(x.data() + b * step * dim, b == batches - 1 ? n - b * step : step);
    const Tensor h = acc.finalize();
    for (size_t i = 0; i < ref.size(); ++i) ASSERT_EQ(h.data[i], static_cast<float>(ref[i])) << batches << " batches, element " << i;
    if (first.empty()) first = h;
    expect_same_tensor(h, first);
  }
}

// With real-valued activations the micro-batches are fixed, and what varies is the order and
// grouping of their partials: sequential adds, two accumulators merged either way round, and
// a tree of merges all give bit-identical H.
TEST(Hessian, MergeIsOrderAndGroupingIndependent) {
  const int64_t dim = 29, rows = 11;
  const int batches = 7;
  const std::vector<float> x = random_activations(rows * batches, dim, 19, false);
  auto batch = [&](int b) { return x.data() + b * rows * dim; };
  cpu::HessianAccumulator all(dim);
  for (int b = 0; b < batches; ++b) all.add(batch(b), rows);

  cpu::HessianAccumulator a(dim), b(dim);
  for (int i = 0; i < batches; ++i) (i % 3 == 0 ? a : b).add(batch(i), rows);
  cpu::HessianAccumulator ab = a, ba = b;
  ab.merge(b);
  ba.merge(a);
  expect_same_tensor(ab.finalize(), all.finalize());
  expect_same_tensor(ba.finalize(), all.finalize());

  cpu::HessianAccumulator reversed(dim);
  for (int i = batches - 1; i >= 0; --i) {
    cpu::HessianAccumulator one(dim);
    one.add(batch(i), rows);
    reversed.merge_packed(one.packed_sums(), one.n_tokens());
  }
  expect_same_tensor(reversed.finalize(), all.finalize());
  EXPECT_EQ(reversed.n_tokens(), rows * batches);
}

TEST(Hessian, FixedPointTruncatesTowardZero) {
  EXPECT_EQ(cpu::hessian_fixed_point(1.0f), static_cast<cpu::hessian_int>(1) << 64);
  EXPECT_EQ(cpu::hessian_fixed_point(-0.75f), -(static_cast<cpu::hessian_int>(3) << 62));
  EXPECT_EQ(cpu::hessian_fixed_point(std::ldexp(1.0f, -70)), 0);
  EXPECT_EQ(cpu::hessian_fixed_point(std::ldexp(-3.0f, -65)), -1);  // -1.5 · 2^-64 → -1
  EXPECT_THROW(cpu::hessian_fixed_point(std::nanf("")), error);
  EXPECT_THROW(cpu::hessian_fixed_point(std::ldexp(1.0f, 70)), error);
}

TEST(Hessian, EmptyAndMismatchedMerge) {
  cpu::HessianAccumulator acc(4);
  const Tensor h = acc.finalize();
  for (float v : h.data) EXPECT_EQ(v, 0.0f);
  cpu::HessianAccumulator other(5);
  EXPECT_THROW(acc.merge(other), error);
}

}  // namespace
}  // namespace shardq
