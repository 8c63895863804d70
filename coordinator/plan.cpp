#include "coordinator/plan.hpp"

#include <algorithm>
#include <limits>

#include "common/error.hpp"

namespace shardq {

int LayerPlan::owner(int layer) const {
  for (int r = 0; r < n_ranks; ++r) {
    if (layer >= begin(r) && layer < end(r)) return r;
  }
  throw error(fmt::format("layer {} is not in the plan ({} layers)", layer, n_layers));
}

std::vector<int> LayerPlan::layers_of(int rank) const {
  std::vector<int> out;
  for (int l = begin(rank); l < end(rank); ++l) out.push_back(l);
  return out;
}

LayerPlan plan_layers(const std::vector<double>& costs, int n_ranks) {
  if (n_ranks < 1) throw error("plan_layers: need at least one rank");
  const int n = static_cast<int>(costs.size());
  std::vector<double> prefix(static_cast<size_t>(n) + 1, 0.0);
  for (int i = 0; i < n; ++i) prefix[static_cast<size_t>(i) + 1] = prefix[static_cast<size_t>(i)] + costs[static_cast<size_t>(i)];
  const int k = std::min(n_ranks, std::max(n, 1));
  // best[j][i]: the smallest possible maximum shard cost splitting layers [0, i) into j shards.
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> best(static_cast<size_t>(k) + 1, std::vector<double>(static_cast<size_t>(n) + 1, inf));
  std::vector<std::vector<int>> cut(static_cast<size_t>(k) + 1, std::vector<int>(static_cast<size_t>(n) + 1, 0));
  best[0][0] = 0.0;
  for (int j = 1; j <= k; ++j) {
    for (int i = 0; i <= n; ++i) {
      for (int c = 0; c <= i; ++c) {
        const double v = std::max(best[static_cast<size_t>(j) - 1][static_cast<size_t>(c)],
                                   prefix[static_cast<size_t>(i)] - prefix[static_cast<size_t>(c)]);
        // Ties go to the later cut so earlier ranks take more layers, deterministically.
        if (v <= best[static_cast<size_t>(j)][static_cast<size_t>(i)] && (j > 1 || c == 0)) {
          best[static_cast<size_t>(j)][static_cast<size_t>(i)] = v;
          cut[static_cast<size_t>(j)][static_cast<size_t>(i)] = c;
        }
      }
    }
  }
  LayerPlan p;
  p.n_layers = n;
  p.n_ranks = n_ranks;
  p.first_layer.assign(static_cast<size_t>(n_ranks) + 1, n);
  int i = n;
  for (int j = k; j >= 1; --j) {
    p.first_layer[static_cast<size_t>(j)] = i;
    i = cut[static_cast<size_t>(j)][static_cast<size_t>(i)];
  }
  p.first_layer[0] = 0;
  return p;
}

nlohmann::json layer_plan_to_json(const LayerPlan& p) {
  return {{"n_layers", p.n_layers}, {"n_ranks", p.n_ranks}, {"first_layer", p.first_layer}};
}

LayerPlan layer_plan_from_json(const nlohmann::json& j) {
  LayerPlan p;
  p.n_layers = j.at("n_layers").get<int>();
  p.n_ranks = j.at("n_ranks").get<int>();
  p.first_layer = j.at("first_layer").get<std::vector<int>>();
  return p;
}

}  // namespace shardq
