// Layer partition: contiguous, complete, and optimal (checked by brute force).
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <random>

#include "coordinator/plan.hpp"

namespace shardq {
namespace {

double max_shard_cost(const LayerPlan& p, const std::vector<double>& costs) {
  double worst = 0;
  for (int r = 0; r < p.n_ranks; ++r) {
    double c = 0;
    for (int l = p.begin(r); l < p.end(r); ++l) c += costs[static_cast<size_t>(l)];
    worst = std::max(worst, c);
  }
  return worst;
}

// Brute force over every way to place n_ranks - 1 cuts.
double best_by_brute_force(const std::vector<double>& costs, int n_ranks) {
  const int n = static_cast<int>(costs.size());
  double best = 1e300;
  std::vector<int> cuts(static_cast<size_t>(n_ranks) + 1, 0);
  cuts.back() = n;
  std::function<void(int, int)> place = [&](int idx, int from) {
    if (idx == n_ranks) {
      double worst = 0;
      for (int r = 0; r < n_ranks; ++r) {
        double c = 0;
        for (int l = cuts[static_cast<size_t>(r)]; l < cuts[static_cast<size_t>(r) + 1]; ++l) c += costs[static_cast<size_t>(l)];
        worst = std::max(worst, c);
      }
      best = std::min(best, worst);
      return;
    }
    for (int c = from; c <= n; ++c) {
      cuts[static_cast<size_t>(idx)] = c;
      place(idx + 1, c);
    }
  };
  place(1, 0);
  return best;
}

TEST(Plan, UniformLayersSplitEvenly) {
  const LayerPlan p = plan_layers(std::vector<double>(12, 1.0), 3);
  EXPECT_EQ(p.first_layer, (std::vector<int>{0, 4, 8, 12}));
  EXPECT_EQ(p.owner(0), 0);
  EXPECT_EQ(p.owner(11), 2);
  const LayerPlan q = plan_layers(std::vector<double>(5, 1.0), 3);
  EXPECT_EQ(max_shard_cost(q, std::vector<double>(5, 1.0)), 2.0);
  EXPECT_EQ(q.first_layer.front(), 0);
  EXPECT_EQ(q.first_layer.back(), 5);
}

TEST(Plan, OptimalForRandomCosts) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 9);
    const int ranks = 1 + static_cast<int>(rng() % 4);
    std::vector<double> costs(static_cast<size_t>(n));
    for (auto& c : costs) c = 1 + rng() % 10;
    const LayerPlan p = plan_layers(costs, ranks);
    ASSERT_EQ(p.first_layer.size(), static_cast<size_t>(ranks) + 1);
    ASSERT_TRUE(std::is_sorted(p.first_layer.begin(), p.first_layer.end()));
    ASSERT_EQ(p.first_layer.front(), 0);
    ASSERT_EQ(p.first_layer.back(), n);
    EXPECT_DOUBLE_EQ(max_shard_cost(p, costs), best_by_brute_force(costs, ranks)) << "n=" << n << " ranks=" << ranks;
  }
}

TEST(Plan, MoreRanksThanLayersLeavesSomeEmpty) {
  const LayerPlan p = plan_layers(std::vector<double>(2, 1.0), 4);
  int total = 0;
  for (int r = 0; r < 4; ++r) total += p.end(r) - p.begin(r);
  EXPECT_EQ(total, 2);
  EXPECT_EQ(layer_plan_from_json(layer_plan_to_json(p)).first_layer, p.first_layer);
}

TEST(Plan, SplitBeginCoversEverything) {
  for (int n = 0; n < 20; ++n) {
    for (int ranks = 1; ranks < 5; ++ranks) {
      EXPECT_EQ(split_begin(n, ranks, 0), 0);
      EXPECT_EQ(split_begin(n, ranks, ranks), n);
      for (int r = 0; r < ranks; ++r) {
        const int64_t len = split_begin(n, ranks, r + 1) - split_begin(n, ranks, r);
        EXPECT_TRUE(len == n / ranks || len == n / ranks + 1);
      }
    }
  }
}

}  // namespace
}  // namespace shardq
