// Score-driven precision policies (coordinator/precision_policy.hpp): the knapsack solvers
// against brute-force enumeration on small random instances, the layer orders of lim / zd /
// random, the ordered walk's budget (avg ≤ target, within one layer's step, moved layers =
// the least important prefix, computed here by a naive count), the sensitivity allocation
// against brute force, and the measured errors against a KL computed here from scratch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "common/error.hpp"
#include "coordinator/precision_policy.hpp"
#include "kernels/quantize.hpp"
#include "support/test_support.hpp"
#include "worker/calibration.hpp"
#include "worker/importance.hpp"
#include "worker/layer_quantize.hpp"

namespace shardq {
namespace {

ModelConfig stories_shape() { return test::stories260k_shape(); }

ModelConfig tiny_config() {
  ModelConfig c;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 8;
  c.vocab_size = 19;
  c.max_position_embeddings = 32;
  return c;
}

JobSpec spec_with(const nlohmann::json& precision) {
  return job_spec_from_json({{"model", "m"}, {"output", "o"}, {"precision", precision}});
}

std::vector<KnapsackItem> random_items(std::mt19937_64& rng, int n_items, int max_options, int64_t unit) {
  std::vector<KnapsackItem> items(static_cast<size_t>(n_items));
  for (auto& it : items) {
    const int k = 1 + static_cast<int>(rng() % static_cast<uint64_t>(max_options));
    for (int j = 0; j < k; ++j) {
      it.cost.push_back(unit * static_cast<int64_t>(rng() % 9));
      it.error.push_back(std::uniform_real_distribution<double>(0.0, 1.0)(rng));
    }
  }
  return items;
}

// Least error over every combination within the budget (+inf when none fits).
double brute_force(const std::vector<KnapsackItem>& items, int64_t budget) {
  double best = INFINITY;
  std::vector<size_t> pick(items.size(), 0);
  for (;;) {
    int64_t cost = 0;
    double err = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      cost += items[i].cost[pick[i]];
      err += items[i].error[pick[i]];
    }
    if (cost <= budget) best = std::min(best, err);
    size_t i = 0;
    while (i < items.size() && ++pick[i] == items[i].cost.size()) pick[i++] = 0;
    if (i == items.size()) break;
  }
  return best;
}

void expect_consistent(const std::vector<KnapsackItem>& items, const KnapsackSolution& s, int64_t budget) {
  ASSERT_EQ(s.choice.size(), items.size());
  int64_t cost = 0;
  double err = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    cost += items[i].cost[static_cast<size_t>(s.choice[i])];
    err += items[i].error[static_cast<size_t>(s.choice[i])];
  }
  EXPECT_EQ(cost, s.cost);
  EXPECT_NEAR(err, s.error, 1e-12);
  EXPECT_LE(cost, budget);
}

TEST(PrecisionPolicy, KnapsackExactMatchesBruteForce) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t unit = 1 + static_cast<int64_t>(rng() % 5) * 7;
    const auto items = random_items(rng, 1 + trial % 6, 4, unit);
    int64_t lo = 0, hi = 0;
    for (const auto& it : items) {
      lo += *std::min_element(it.cost.begin(), it.cost.end());
      hi += *std::max_element(it.cost.begin(), it.cost.end());
    }
    const int64_t budget = lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo + unit + 1));
    const KnapsackSolution s = knapsack_exact(items, budget);
    expect_consistent(items, s, budget);
    EXPECT_NEAR(s.error, brute_force(items, budget), 1e-12) << "trial " << trial;
    EXPECT_EQ(s.solver, "dp");
    if (lo > 0) {
      EXPECT_THROW(knapsack_exact(items, lo - 1), error);
    }
  }
}

// A relaxed solution x(λ) (per item argmin error + λ·cost) is optimal among all choices
// costing no more than it; the Lagrangian solver must find that optimum at that budget, and
// stay feasible (never better than the optimum) at any budget.
TEST(PrecisionPolicy, KnapsackLagrangianFeasibleAndOptimalAtRelaxedBudgets) {
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    const auto items = random_items(rng, 1 + trial % 6, 4, 3);
    const double lambda = std::uniform_real_distribution<double>(0.0, 0.3)(rng);
    int64_t relaxed_cost = 0;
    for (const auto& it : items) {
      size_t best = 0;
      for (size_t k = 1; k < it.cost.size(); ++k) {
        const double v = it.error[k] + lambda * static_cast<double>(it.cost[k]);
        const double b = it.error[best] + lambda * static_cast<double>(it.cost[best]);
        if (v < b || (v == b && it.cost[k] < it.cost[best])) best = k;
      }
      relaxed_cost += it.cost[best];
    }
    const KnapsackSolution at_relaxed = knapsack_lagrangian(items, relaxed_cost);
    expect_consistent(items, at_relaxed, relaxed_cost);
    EXPECT_NEAR(at_relaxed.error, brute_force(items, relaxed_cost), 1e-9) << "trial " << trial;

    const int64_t budget = relaxed_cost + static_cast<int64_t>(rng() % 7);
    const KnapsackSolution any = knapsack_lagrangian(items, budget);
    expect_consistent(items, any, budget);
    EXPECT_GE(any.error, brute_force(items, budget) - 1e-12);
    EXPECT_EQ(any.solver, "lagrangian");
    // knapsack_solve picks the exact DP here, and falls back when told the grid is too big.
    EXPECT_EQ(knapsack_solve(items, budget).solver, "dp");
    EXPECT_EQ(knapsack_solve(items, budget, 0).solver, "lagrangian");
  }
}

TEST(PrecisionPolicy, LayerOrders) {
  EXPECT_EQ(layer_order_lim({0.3, 0.1, 0.5, 0.2}), (std::vector<int>{1, 3, 0, 2}));  // low LIM first
  EXPECT_EQ(layer_order_zd({0.3, 0.1, 0.5, 0.2}), (std::vector<int>{2, 0, 3, 1}));   // high ZD first
  std::set<std::vector<int>> seen;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    auto order = layer_order_random(10, seed);
    EXPECT_EQ(order, layer_order_random(10, seed));
    seen.insert(order);
    std::sort(order.begin(), order.end());
    for (int i = 0; i < 10; ++i) EXPECT_EQ(order[static_cast<size_t>(i)], i);
  }
  EXPECT_GT(seen.size(), 6u);  // 8 seeds, 10! orders: collisions would mean the seed is ignored
}

TEST(PrecisionPolicy, BitsBudgetIsTheLargestTotalAtOrBelowTarget) {
  for (double target : {2.0, 2.5, 3.0, 3.1, 3.6, 3.99, 4.0}) {
    for (int64_t params : {7LL, 1000LL, 226560LL, 1234567LL}) {
      const int64_t b = bits_budget(target, params);
      EXPECT_LE(static_cast<double>(b) / static_cast<double>(params), target);
      EXPECT_GT(static_cast<double>(b + 1) / static_cast<double>(params), target);
    }
  }
}

// The ordered walk against a naive count: with every layer the same size, the number of
// layers moved 4 → 2 is the smallest k with (4 − 2k/5) ≤ target, and they are the first k of
// the order.
TEST(PrecisionPolicy, OrderedPolicyMovesTheLeastImportantPrefixWithinOneStep) {
  const ModelConfig c = stories_shape();
  const std::vector<double> lim = {0.9, 0.2, 0.5, 0.1, 0.7};
  const std::vector<double> zd = {0.31, 0.30, 0.29, 0.35, 0.28};
  PrecisionScores scores;
  scores.lim = lim;
  scores.zd = zd;
  for (const std::string policy : {"lim", "zd", "random"}) {
    for (double target : {2.0, 2.3, 2.4, 3.0, 3.5, 3.6, 3.9, 4.0, 6.0}) {
      const JobSpec spec = spec_with({{"policy", policy}, {"target_bpw", target}, {"bit_options", {2, 4}}, {"seed", 3}});
      const Allocation a = allocate_precision(c, spec, scores);
      const std::vector<int> order = policy == "lim" ? layer_order_lim(lim)
                                     : policy == "zd" ? layer_order_zd(zd)
                                                      : layer_order_random(5, 3);
      int k = 0;
      while (k < 5 && 4.0 - 2.0 * k / 5.0 > target + 1e-12) ++k;
      for (int i = 0; i < 5; ++i) {
        const int layer = order[static_cast<size_t>(i)];
        for (const auto& m : a.modules) {
          if (m.module.layer == layer) {
            EXPECT_EQ(m.bits(), i < k ? 2 : 4) << policy << " " << target << " layer " << layer;
          }
        }
      }
      EXPECT_LE(a.avg_bits(), target);
      if (target <= 4.0) {
        EXPECT_GT(a.avg_bits(), target - 2.0 / 5.0 - 1e-12);
      }
    }
  }
}

TEST(PrecisionPolicy, OrderedPolicyCascadesThroughMoreOptionsAndKeepsFixedModules) {
  const ModelConfig c = stories_shape();
  PrecisionScores scores;
  scores.lim = {0.9, 0.2, 0.5, 0.1, 0.7};
  scores.zd = {0, 0, 0, 0, 0};
  // Options 2, 3, 4, 8 at 3.5: every layer leaves 8 for 4, then the three least important
  // (LIM order 3, 1, 2) go on to 3 — (4·2 + 3·3) / 5 = 3.4.
  const Allocation a = allocate_precision(
      c, spec_with({{"policy", "lim"}, {"target_bpw", 3.5}, {"bit_options", {2, 3, 4, 8}}}), scores);
  EXPECT_DOUBLE_EQ(a.avg_bits(), 3.4);
  EXPECT_EQ(a.find("model.layers.3.mlp.up_proj").bits(), 3);
  EXPECT_EQ(a.find("model.layers.0.mlp.up_proj").bits(), 4);
  // 16 as an option keeps the most important layers in floating point.
  const Allocation keep = allocate_precision(
      c, spec_with({{"policy", "lim"}, {"target_bpw", 10.0}, {"bit_options", {4, 16}}}), scores);
  EXPECT_FALSE(keep.find("model.layers.0.self_attn.q_proj").quantized);
  EXPECT_LE(keep.avg_bits(), 10.0);
  EXPECT_GT(keep.avg_bits(), 10.0 - 12.0 / 5.0);
  // An override fixes layer 0's attention at 8 bits; the rest share what is left.
  const Allocation o = allocate_precision(
      c, spec_with({{"policy", "lim"}, {"target_bpw", 3.0}, {"bit_options", {2, 4}},
                    {"overrides", {{"model.layers.0.self_attn.*", {{"bits", 8}}}}}}), scores);
  EXPECT_EQ(o.find("model.layers.0.self_attn.q_proj").bits(), 8);
  EXPECT_LE(o.avg_bits(), 3.0);
  EXPECT_THROW(allocate_precision(c, spec_with({{"policy", "lim"}, {"target_bpw", 1.9}, {"bit_options", {2, 4}}}), scores),
               spec_error);
  EXPECT_THROW(allocate_precision(c, spec_with({{"policy", "zd"}, {"target_bpw", 3.0}, {"bit_options", {2, 4}}}), {}),
               error);  // no scores
}

// Per-linear knapsack on a 2-layer model (14 linears × 2 options) against brute force.
TEST(PrecisionPolicy, SensitivityAllocationIsOptimal) {
  const ModelConfig c = tiny_config();
  std::mt19937_64 rng(2);
  for (double target : {2.4, 3.0, 3.5, 3.9}) {
    PrecisionScores scores;
    scores.bit_options = {2, 4};
    std::vector<KnapsackItem> items;
    int64_t params = 0;
    for (const auto& m : model_modules(c)) {
      const double e4 = std::uniform_real_distribution<double>(0.0, 0.1)(rng);
      scores.module_error[m.name] = {e4 + std::uniform_real_distribution<double>(0.0, 1.0)(rng), e4};
      items.push_back({{2 * m.params(), 4 * m.params()}, scores.module_error[m.name]});
      params += m.params();
    }
    std::string solver;
    const Allocation a = allocate_precision(c, spec_with({{"policy", "sensitivity"}, {"target_bpw", target}, {"bit_options", {2, 4}}}),
                                            scores, &solver);
    EXPECT_EQ(solver, "dp");
    EXPECT_LE(a.avg_bits(), target);
    double err = 0;
    for (const auto& m : a.modules) err += scores.module_error.at(m.module.name)[m.bits() == 2 ? 0 : 1];
    EXPECT_NEAR(err, brute_force(items, bits_budget(target, params)), 1e-12) << target;
  }
}

TEST(PrecisionPolicy, ScoresRoundTripAndLayerSums) {
  PrecisionScores s;
  s.lim = {0.1, 0.2};
  s.zd = {0.3, 0.4};
  s.bit_options = {2, 4};
  s.module_error = {{"model.layers.1.mlp.up_proj", {0.5, 0.25}}, {"model.layers.1.mlp.down_proj", {1.0, 0.5}},
             {"model.layers.0.mlp.up_proj", {2.0, 1.0}}};
  const PrecisionScores r = precision_scores_from_json(precision_scores_to_json(s));
  EXPECT_EQ(r.module_error, s.module_error);
  EXPECT_EQ(r.lim, s.lim);
  const auto l1 = r.layer_sensitivity(1);
  EXPECT_DOUBLE_EQ(l1.at("2"), 1.5);
  EXPECT_DOUBLE_EQ(l1.at("4"), 0.75);
}

double naive_kl(const std::vector<double>& p_log, const std::vector<double>& q_log, int64_t n, int64_t v) {
  double sum = 0;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < v; ++i) sum += std::exp(p_log[t * v + i]) * (p_log[t * v + i] - q_log[t * v + i]);
  }
  return sum / static_cast<double>(n);
}

std::vector<double> log_probs(const ModelWeights& m, const std::vector<int32_t>& tokens, int n_seq, int seq_len) {
  const int64_t n = static_cast<int64_t>(tokens.size()), h = m.config.hidden_size, v = m.config.vocab_size;
  std::vector<float> hidden(static_cast<size_t>(n * h));
  embed(m, tokens.data(), n, hidden.data());
  for (const auto& w : m.layers) layer_forward(m.config, w, hidden.data(), n_seq, seq_len);
  std::vector<float> logits(static_cast<size_t>(n * v));
  head_forward(m, hidden.data(), n, logits.data());
  std::vector<double> out(static_cast<size_t>(n * v));
  for (int64_t t = 0; t < n; ++t) {
    double mx = -INFINITY, z = 0;
    for (int64_t i = 0; i < v; ++i) mx = std::max(mx, static_cast<double>(logits[t * v + i]));
    for (int64_t i = 0; i < v; ++i) z += std::exp(logits[t * v + i] - mx);
    for (int64_t i = 0; i < v; ++i) out[t * v + i] = logits[t * v + i] - mx - std::log(z);
  }
  return out;
}

// measure_layer_sensitivity(l, m, b) = KL(model ‖ model with linear m of layer l replaced by
// its GPTQ quantization at b bits), recomputed here with whole-model forwards; 16 costs 0.
TEST(PrecisionPolicy, MeasuredSensitivityIsTheKlOfReplacingOneLinear) {
  const ModelConfig c = tiny_config();
  const ModelWeights model = model_weights_random(c, 9);
  const int n_seq = 2, seq_len = 12;
  std::mt19937_64 rng(4);
  std::vector<int32_t> tokens(static_cast<size_t>(n_seq * seq_len));
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(c.vocab_size));
  const int layer = 1;
  std::vector<float> hidden(tokens.size() * static_cast<size_t>(c.hidden_size));
  embed(model, tokens.data(), static_cast<int64_t>(tokens.size()), hidden.data());
  layer_forward(c, model.layer(0), hidden.data(), n_seq, seq_len);
  LayerCalibration calib(c);
  calib.forward(c, model.layer(layer), hidden.data(), n_seq, seq_len);

  const JobSpec spec = spec_with({{"policy", "sensitivity"}, {"target_bpw", 3.0}, {"bit_options", {2, 4, 16}}});
  std::vector<ModuleChoice> choices;
  for (const auto& m : allocate_base(c, spec).modules) {
    if (m.module.layer == layer) choices.push_back(m);
  }
  std::vector<bool> free(choices.size(), true);
  free[2] = false;  // v_proj fixed: not measured
  const LayerSensitivityProbe probe(model, tokens, n_seq, seq_len);
  const auto errors = measure_layer_sensitivity(probe, model.layer(layer), calib, choices, free, {2, 4, 16});
  EXPECT_EQ(errors.size(), 6u);
  EXPECT_EQ(errors.count(choices[2].module.name), 0u);

  const auto ref = log_probs(model, tokens, n_seq, seq_len);
  for (size_t i : {size_t{0}, size_t{6}}) {
    const auto& e = errors.at(choices[i].module.name);
    EXPECT_EQ(e[2], 0.0);
    for (size_t k = 0; k < 2; ++k) {
      ModuleChoice ch = choices[i];
      ch.quant.bits = k == 0 ? 2 : 4;
      const auto q = quantize_layer(model.layer(layer), {ch}, &calib, nullptr);
      ModelWeights replaced = model;
      replaced.layer(layer) = dequantized_layer(model.layer(layer), q);
      const double kl = naive_kl(ref, log_probs(replaced, tokens, n_seq, seq_len), static_cast<int64_t>(tokens.size()),
                                 c.vocab_size);
      EXPECT_NEAR(e[k], kl, 1e-6 + 1e-4 * kl) << choices[i].module.name << " bits " << ch.quant.bits;
      EXPECT_GT(e[k], 0.0);
    }
    EXPECT_GT(e[0], e[1]);  // 2 bits hurt more than 4
  }
}

}  // namespace
}  // namespace shardq
