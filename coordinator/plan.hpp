// Layer partition: decoder layers split into contiguous shards, one per rank, balanced by
// cost (the linear-partition problem solved exactly by dynamic programming: minimise the
// largest shard's cost). Rank 0 computes it from config.json alone and broadcasts it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/partition.hpp"

namespace shardq {

struct LayerPlan {
  int n_layers = 0;
  int n_ranks = 1;
  std::vector<int> first_layer;  // per rank: [first_layer[r], first_layer[r+1]) ; size n_ranks + 1
  int owner(int layer) const;
  int begin(int rank) const { return first_layer[static_cast<size_t>(rank)]; }
  int end(int rank) const { return first_layer[static_cast<size_t>(rank) + 1]; }
  std::vector<int> layers_of(int rank) const;
};

// `costs` per layer (e.g. linear parameters). A rank may get no layer when n_ranks > n_layers.
LayerPlan plan_layers(const std::vector<double>& costs, int n_ranks);

nlohmann::json layer_plan_to_json(const LayerPlan& p);
LayerPlan layer_plan_from_json(const nlohmann::json& j);


}  // namespace shardq
