#include "coordinator/precision_policy.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <fmt/format.h>

#include "common/error.hpp"
#include "worker/calibration.hpp"
#include "worker/importance.hpp"
#include "worker/layer_quantize.hpp"

namespace shardq {

// ------------------------------------------------------------------ multiple-choice knapsack
namespace {

void check_items(const std::vector<KnapsackItem>& items) {
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].cost.empty() || items[i].cost.size() != items[i].error.size())
      throw error(fmt::format("knapsack item {}: {} costs and {} errors", i, items[i].cost.size(), items[i].error.size()));
    for (int64_t c : items[i].cost) {
      if (c < 0) throw error(fmt::format("knapsack item {}: negative cost {}", i, c));
    }
  }
}

KnapsackSolution evaluate(const std::vector<KnapsackItem>& items, std::vector<int> choice, std::string solver) {
  KnapsackSolution s{std::move(choice), 0, 0.0, std::move(solver)};
  for (size_t i = 0; i < items.size(); ++i) {
    s.cost += items[i].cost[static_cast<size_t>(s.choice[i])];
    s.error += items[i].error[static_cast<size_t>(s.choice[i])];
  }
  return s;
}

int64_t min_cost(const std::vector<KnapsackItem>& items) {
  int64_t c = 0;
  for (const auto& it : items) c += *std::min_element(it.cost.begin(), it.cost.end());
  return c;
}

void check_feasible(const std::vector<KnapsackItem>& items, int64_t budget) {
  if (min_cost(items) > budget)
    throw error(fmt::format("knapsack: the cheapest choice costs {}, over the budget {}", min_cost(items), budget));
}

int64_t cost_gcd(const std::vector<KnapsackItem>& items) {
  int64_t g = 0;
  for (const auto& it : items) {
    for (int64_t c : it.cost) g = std::gcd(g, c);
  }
  return g > 0 ? g : 1;
}

// Per item, argmin error + λ·cost; ties go to the cheaper option.
std::vector<int> relaxed_choice(const std::vector<KnapsackItem>& items, double lambda) {
  std::vector<int> choice;
  for (const auto& it : items) {
    int best = 0;
    for (size_t k = 1; k < it.cost.size(); ++k) {
      const double v = it.error[k] + lambda * static_cast<double>(it.cost[k]);
      const double b = it.error[static_cast<size_t>(best)] + lambda * static_cast<double>(it.cost[static_cast<size_t>(best)]);
      if (v < b || (v == b && it.cost[k] < it.cost[static_cast<size_t>(best)])) best = static_cast<int>(k);
    }
    choice.push_back(best);
  }
  return choice;
}

}  // namespace

KnapsackSolution knapsack_exact(const std::vector<KnapsackItem>& items, int64_t budget) {
  check_items(items);
  check_feasible(items, budget);
  const int64_t g = cost_gcd(items);
  const int64_t cells = budget / g + 1;
  constexpr double inf = std::numeric_limits<double>::infinity();
  // best[c] = least error of the items so far with total cost exactly c·g; choice table per
  // item for the backtrack.
  std::vector<double> best(static_cast<size_t>(cells), inf), next(static_cast<size_t>(cells));
  best[0] = 0.0;
  std::vector<std::vector<int8_t>> pick(items.size(), std::vector<int8_t>(static_cast<size_t>(cells), -1));
  for (size_t i = 0; i < items.size(); ++i) {
    std::fill(next.begin(), next.end(), inf);
    for (size_t k = 0; k < items[i].cost.size(); ++k) {
      const int64_t step = items[i].cost[k] / g;
      for (int64_t c = step; c < cells; ++c) {
        const double v = best[static_cast<size_t>(c - step)] + items[i].error[k];
        if (v < next[static_cast<size_t>(c)]) {
          next[static_cast<size_t>(c)] = v;
          pick[i][static_cast<size_t>(c)] = static_cast<int8_t>(k);
        }
      }
    }
    std::swap(best, next);
  }
  int64_t at = 0;
  for (int64_t c = 1; c < cells; ++c) {
    if (best[static_cast<size_t>(c)] < best[static_cast<size_t>(at)]) at = c;
  }
  std::vector<int> choice(items.size());
  for (size_t i = items.size(); i-- > 0;) {
    const int k = pick[i][static_cast<size_t>(at)];
    choice[i] = k;
    at -= items[i].cost[static_cast<size_t>(k)] / g;
  }
  return evaluate(items, std::move(choice), "dp");
}

KnapsackSolution knapsack_lagrangian(const std::vector<KnapsackItem>& items, int64_t budget) {
  check_items(items);
  check_feasible(items, budget);
  auto cost_of = [&](double lambda) { return evaluate(items, relaxed_choice(items, lambda), "").cost; };
  // λ_hi feasible, λ_lo not (or 0 when λ = 0 already fits).
  double lo = 0.0, hi = 1.0;
  if (cost_of(0.0) <= budget) {
    hi = 0.0;
  } else {
    double max_error = 0.0;
    for (const auto& it : items) {
      for (double e : it.error) max_error = std::max(max_error, std::abs(e));
    }
    hi = std::max(1e-300, max_error);
    while (cost_of(hi) > budget) hi *= 2.0;
    for (int iter = 0; iter < 200 && hi - lo > hi * 1e-15; ++iter) {
      const double mid = 0.5 * (lo + hi);
      (cost_of(mid) <= budget ? hi : lo) = mid;
    }
  }
  std::vector<int> choice = relaxed_choice(items, hi);
  // Greedy fill: the upgrade saving the most error per extra cost that still fits.
  int64_t cost = evaluate(items, choice, "").cost;
  for (;;) {
    double best_ratio = 0.0;
    size_t best_item = 0;
    int best_option = -1;
    for (size_t i = 0; i < items.size(); ++i) {
      const auto& it = items[i];
      const size_t cur = static_cast<size_t>(choice[i]);
      for (size_t k = 0; k < it.cost.size(); ++k) {
        const int64_t extra = it.cost[k] - it.cost[cur];
        const double saved = it.error[cur] - it.error[k];
        if (saved <= 0.0 || cost + extra > budget) continue;
        const double ratio = extra > 0 ? saved / static_cast<double>(extra) : std::numeric_limits<double>::infinity();
        if (ratio > best_ratio) {
          best_ratio = ratio;
          best_item = i;
          best_option = static_cast<int>(k);
        }
      }
    }
    if (best_option < 0) break;
    cost += items[best_item].cost[static_cast<size_t>(best_option)] - items[best_item].cost[static_cast<size_t>(choice[best_item])];
    choice[best_item] = best_option;
  }
  return evaluate(items, std::move(choice), "lagrangian");
}

KnapsackSolution knapsack_solve(const std::vector<KnapsackItem>& items, int64_t budget, int64_t max_cells) {
  check_items(items);
  const int64_t cells = budget / cost_gcd(items) + 1;
  if (!items.empty() && cells <= max_cells / static_cast<int64_t>(items.size())) return knapsack_exact(items, budget);
  return knapsack_lagrangian(items, budget);
}

// ------------------------------------------------------------------------------- policies
std::vector<int> layer_order_lim(const std::vector<double>& lim) {
  std::vector<int> order(lim.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return lim[static_cast<size_t>(a)] < lim[static_cast<size_t>(b)]; });
  return order;
}

std::vector<int> layer_order_zd(const std::vector<double>& zd) {
  std::vector<int> order(zd.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return zd[static_cast<size_t>(a)] > zd[static_cast<size_t>(b)]; });
  return order;
}

std::vector<int> layer_order_random(int n_layers, uint64_t seed) {
  std::vector<int> order(static_cast<size_t>(std::max(0, n_layers)));
  std::iota(order.begin(), order.end(), 0);
  uint64_t state = seed;
  for (size_t i = order.size(); i > 1; --i) {
    const uint64_t j = uniform_below(splitmix64_next(state), i);
    std::swap(order[i - 1], order[static_cast<size_t>(j)]);
  }
  return order;
}

std::map<std::string, double> PrecisionScores::layer_sensitivity(int layer) const {
  std::map<std::string, double> out;
  const std::string prefix = layer_prefix(layer);
  for (const auto& [name, errors] : module_error) {
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    for (size_t k = 0; k < bit_options.size() && k < errors.size(); ++k) out[std::to_string(bit_options[k])] += errors[k];
  }
  return out;
}

nlohmann::json precision_scores_to_json(const PrecisionScores& s) {
  return {{"lim", s.lim}, {"zd", s.zd}, {"bit_options", s.bit_options}, {"error", s.module_error}};
}

PrecisionScores precision_scores_from_json(const nlohmann::json& j) {
  PrecisionScores s;
  s.lim = j.at("lim").get<std::vector<double>>();
  s.zd = j.at("zd").get<std::vector<double>>();
  s.bit_options = j.at("bit_options").get<std::vector<int>>();
  s.module_error = j.at("error").get<std::map<std::string, std::vector<double>>>();
  return s;
}

int64_t bits_budget(double target_bpw, int64_t params) {
  const double p = static_cast<double>(params);
  auto fits = [&](int64_t b) { return static_cast<double>(b) / p <= target_bpw; };
  int64_t b = static_cast<int64_t>(std::floor(target_bpw * p));
  while (!fits(b)) --b;
  while (fits(b + 1)) ++b;
  return b;
}

std::vector<bool> free_modules(const Allocation& base, const JobSpec& spec) {
  std::vector<bool> free;
  for (const auto& m : base.modules) {
    bool is_free = m.quantized;
    for (const auto& o : spec.precision.overrides) {
      if (glob_match(o.pattern, m.module.name)) is_free = false;
    }
    free.push_back(is_free);
  }
  return free;
}

namespace {

void set_bits(ModuleChoice& m, int bits) {
  m.quantized = bits < 16;
  if (m.quantized) m.quant.bits = bits;
}

struct BudgetView {
  int64_t budget = 0;  // bits allowed for the free modules
  int64_t free_params = 0;
};

BudgetView free_budget(const Allocation& a, const std::vector<bool>& free, double target_bpw) {
  int64_t params = 0, fixed_bits = 0;
  BudgetView v;
  for (size_t i = 0; i < a.modules.size(); ++i) {
    const auto& m = a.modules[i];
    params += m.module.params();
    if (free[i]) {
      v.free_params += m.module.params();
    } else {
      fixed_bits += static_cast<int64_t>(m.bits()) * m.module.params();
    }
  }
  v.budget = bits_budget(target_bpw, params) - fixed_bits;
  return v;
}

[[noreturn]] void unreachable(double target_bpw, const Allocation& a, const std::vector<bool>& free, int lowest) {
  Allocation low = a;
  for (size_t i = 0; i < low.modules.size(); ++i) {
    if (free[i]) set_bits(low.modules[i], lowest);
  }
  throw spec_error("precision.target_bpw",
                   fmt::format("{} is below the lowest average the bit options and fixed modules allow ({:.4f})",
                               target_bpw, low.avg_bits()));
}

}  // namespace

void allocate_ordered(Allocation& a, const std::vector<bool>& free, const std::vector<int>& order,
                      const std::vector<int>& bit_options, double target_bpw) {
  if (bit_options.empty()) throw spec_error("precision.bit_options", "is empty");
  std::vector<int> options = bit_options;
  std::sort(options.begin(), options.end());
  const BudgetView v = free_budget(a, free, target_bpw);
  if (static_cast<int64_t>(options.front()) * v.free_params > v.budget) unreachable(target_bpw, a, free, options.front());
  std::vector<int64_t> layer_params;
  for (size_t i = 0; i < a.modules.size(); ++i) {
    if (!free[i]) continue;
    const auto l = static_cast<size_t>(a.modules[i].module.layer);
    if (layer_params.size() <= l) layer_params.resize(l + 1, 0);
    layer_params[l] += a.modules[i].module.params();
  }
  std::vector<size_t> level(layer_params.size(), options.size() - 1);
  int64_t total = static_cast<int64_t>(options.back()) * v.free_params;
  for (size_t step = options.size() - 1; step > 0 && total > v.budget; --step) {
    for (int l : order) {
      if (total <= v.budget) break;
      const auto li = static_cast<size_t>(l);
      if (li >= layer_params.size() || layer_params[li] == 0) continue;
      total -= static_cast<int64_t>(options[step] - options[step - 1]) * layer_params[li];
      level[li] = step - 1;
    }
  }
  for (size_t i = 0; i < a.modules.size(); ++i) {
    if (free[i]) set_bits(a.modules[i], options[level[static_cast<size_t>(a.modules[i].module.layer)]]);
  }
}

std::string allocate_sensitivity(Allocation& a, const std::vector<bool>& free, const PrecisionScores& scores,
                                 double target_bpw) {
  const std::vector<int>& options = scores.bit_options;
  if (options.empty()) throw error("sensitivity allocation: no bit options measured");
  const BudgetView v = free_budget(a, free, target_bpw);
  if (static_cast<int64_t>(*std::min_element(options.begin(), options.end())) * v.free_params > v.budget)
    unreachable(target_bpw, a, free, *std::min_element(options.begin(), options.end()));
  std::vector<KnapsackItem> items;
  std::vector<size_t> index;
  for (size_t i = 0; i < a.modules.size(); ++i) {
    if (!free[i]) continue;
    const auto& m = a.modules[i].module;
    const auto it = scores.module_error.find(m.name);
    if (it == scores.module_error.end() || it->second.size() != options.size())
      throw error(fmt::format("sensitivity allocation: no measured error for '{}' at every option", m.name));
    KnapsackItem item;
    for (int b : options) item.cost.push_back(static_cast<int64_t>(b) * m.params());
    item.error = it->second;
    items.push_back(std::move(item));
    index.push_back(i);
  }
  const KnapsackSolution s = knapsack_solve(items, v.budget);
  for (size_t j = 0; j < items.size(); ++j) set_bits(a.modules[index[j]], options[static_cast<size_t>(s.choice[j])]);
  return s.solver;
}

bool policy_needs_measurement(const std::string& policy) {
  return policy == "lim" || policy == "zd" || policy == "sensitivity";
}

bool policy_is_score_driven(const std::string& policy) { return policy_needs_measurement(policy) || policy == "random"; }

void precision_policy_check(const JobSpec& spec) {
  if (!policy_is_score_driven(spec.precision.policy)) return;
  if (spec.quant.method != quant_method::gptq && spec.quant.method != quant_method::rtn)
    throw spec_error("quant.method", fmt::format("policy '{}' chooses bits per layer, which needs gptq or rtn, got {}",
                                                 spec.precision.policy, quant_method_name(spec.quant.method)));
  if (!spec.precision.target_bpw) throw spec_error("precision.target_bpw", fmt::format("is required by policy '{}'", spec.precision.policy));
  if (spec.precision.bit_options.size() < 2)
    throw spec_error("precision.bit_options", fmt::format("policy '{}' needs at least two bit options", spec.precision.policy));
}

Allocation allocate_precision(const ModelConfig& c, const JobSpec& spec, const PrecisionScores& scores,
                              std::string* solver) {
  Allocation a = allocate_base(c, spec);
  const std::string& policy = spec.precision.policy;
  if (!policy_is_score_driven(policy)) return a;
  precision_policy_check(spec);
  const std::vector<bool> free = free_modules(a, spec);
  const double target = *spec.precision.target_bpw;
  if (policy == "sensitivity") {
    const std::string used = allocate_sensitivity(a, free, scores, target);
    if (solver) *solver = used;
    return a;
  }
  std::vector<int> order;
  if (policy == "random") {
    order = layer_order_random(c.num_layers, spec.precision.seed);
  } else {
    const std::vector<double>& s = policy == "lim" ? scores.lim : scores.zd;
    if (static_cast<int>(s.size()) != c.num_layers)
      throw error(fmt::format("policy '{}': {} layer scores for {} layers", policy, s.size(), c.num_layers));
    order = policy == "lim" ? layer_order_lim(s) : layer_order_zd(s);
  }
  allocate_ordered(a, free, order, spec.precision.bit_options, target);
  if (solver) *solver = "order";
  return a;
}

// ------------------------------------------------------------------------- measurement
std::map<std::string, std::vector<double>> measure_layer_sensitivity(
    const LayerSensitivityProbe& probe, const LayerWeights& weights, const LayerCalibration& calib,
    const std::vector<ModuleChoice>& choices, const std::vector<bool>& free, const std::vector<int>& bit_options) {
  std::map<std::string, std::vector<double>> out;
  for (size_t i = 0; i < choices.size(); ++i) {
    if (free[i]) out[choices[i].module.name].assign(bit_options.size(), 0.0);
  }
  if (out.empty()) return out;
  const int layer = choices.front().module.layer;
  for (size_t k = 0; k < bit_options.size(); ++k) {
    if (bit_options[k] >= 16) continue;  // kept in floating point: no error
    std::vector<ModuleChoice> at_b;
    for (size_t i = 0; i < choices.size(); ++i) {
      if (!free[i]) continue;
      ModuleChoice m = choices[i];
      set_bits(m, bit_options[k]);
      at_b.push_back(m);
    }
    const auto quantized = quantize_layer(weights, at_b, &calib, nullptr);
    for (const QuantizedModule& q : quantized) {
      const LayerWeights replaced = dequantized_layer(weights, {q});
      out[q.name][k] = probe.kl_with_layer(layer, replaced);
    }
  }
  return out;
}

}  // namespace shardq
