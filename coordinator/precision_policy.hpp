// Score-driven precision policies (job spec precision.policy lim | zd | random | sensitivity):
// who gets which of the spec's bit_options under the budget precision.target_bpw.
//
// Free and fixed modules. allocate_base() (allocation.hpp) builds the starting point. A
// module is *fixed* when the base leaves it in floating point (components) or an override
// pattern matches it; fixed modules keep their bits and count toward the average. Every other
// linear is *free* and gets one of bit_options (16 = kept in floating point). The budget is
// the largest integer number of bits B with B / P ≤ target_bpw in double arithmetic (P = all
// linear parameters, as Allocation::avg_bits and the manifest count them), so the achieved
// average is never above the target.
//
// Ordered policies (Dumitru et al., "Layer-Wise Quantization", arXiv:2406.17415), per layer:
//   lim     least important = lowest LIM (a higher LIM changes its input more: more important)
//   zd      least important = highest ZD (the paper: a smaller ZD marks a more important layer)
//   random  a permutation drawn with splitmix64 seeded by precision.seed (Fisher–Yates)
// Every free linear starts at the highest option. Layers then move, least important first,
// one option step down (highest → next lower) until the total is within budget; when every
// layer has moved and the budget is still exceeded, the next pass moves them again one more
// step in the same order. With two options this is exactly the paper's two-width scheme
// (e.g. 4 → 2); with more it amounts to mixing the two options that bracket the target.
// The walk stops at the first layer that brings the total within budget, so the average is
// ≤ target and within one layer's step (its free parameters × the option gap / P) of it.
//
// sensitivity (measurement then optimisation, like exllamav2's convert): for every free
// linear m and option b the predicted error e(m, b) is the *measured* KL divergence of the
// model's next-token distribution when m alone is replaced by its GPTQ quantization at b
// bits (Hessian of the unquantized model; see measure_layer_sensitivity). Errors of
// different linears are taken as additive, and the bits of all free linears are chosen at
// once to minimise Σ e(m, b_m) subject to Σ b_m · params(m) ≤ budget: a multiple-choice
// knapsack, solved exactly by dynamic programming over the budget in units of the gcd of all
// costs when that grid is small (it is for Llama shapes: params are multiples of large
// powers of two), otherwise by Lagrangian relaxation (bisection on λ) plus a greedy fill.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/job_spec.hpp"
#include "common/model_config.hpp"
#include "coordinator/allocation.hpp"

namespace shardq {

class LayerCalibration;
class LayerSensitivityProbe;
struct LayerWeights;

// ------------------------------------------------------------------ multiple-choice knapsack
// One item: pick exactly one option; option k costs cost[k] (≥ 0) and brings error[k].
struct KnapsackItem {
  std::vector<int64_t> cost;
  std::vector<double> error;
};

struct KnapsackSolution {
  std::vector<int> choice;  // option index per item
  int64_t cost = 0;
  double error = 0.0;
  std::string solver;  // "dp" | "lagrangian"
};

// Exact minimum of Σ error under Σ cost ≤ budget, by DP over budget / gcd(costs) cells.
// Throws error when no choice fits the budget.
KnapsackSolution knapsack_exact(const std::vector<KnapsackItem>& items, int64_t budget);
// Lagrangian relaxation: bisection on λ for the cheapest-feasible argmin of error + λ·cost per
// item, then greedy upgrades by error saved per extra cost while the budget allows. Optimal
// whenever the budget equals the cost of a relaxed solution; feasible always.
KnapsackSolution knapsack_lagrangian(const std::vector<KnapsackItem>& items, int64_t budget);
// knapsack_exact when items × budget cells ≤ `max_cells`, knapsack_lagrangian otherwise.
KnapsackSolution knapsack_solve(const std::vector<KnapsackItem>& items, int64_t budget,
                                int64_t max_cells = 50'000'000);

// ------------------------------------------------------------------------------- policies
// Layer indices, least important first.
std::vector<int> layer_order_lim(const std::vector<double>& lim);
std::vector<int> layer_order_zd(const std::vector<double>& zd);
std::vector<int> layer_order_random(int n_layers, uint64_t seed);

// What the measurement pass produced, gathered on rank 0.
struct PrecisionScores {
  std::vector<double> lim;  // per layer (empty when not measured)
  std::vector<double> zd;
  std::vector<int> bit_options;                         // the options error[] is indexed by
  std::map<std::string, std::vector<double>> module_error;  // module name -> predicted error per option
  bool measured() const { return !lim.empty(); }
  // Per layer and option: Σ over the layer's measured linears ("2" -> ...), for the manifest.
  std::map<std::string, double> layer_sensitivity(int layer) const;
};
nlohmann::json precision_scores_to_json(const PrecisionScores& s);
PrecisionScores precision_scores_from_json(const nlohmann::json& j);

// The largest integer bit total whose average over `params` is ≤ target (in double).
int64_t bits_budget(double target_bpw, int64_t params);

// Modules a policy may re-assign (see the top of this file).
std::vector<bool> free_modules(const Allocation& base, const JobSpec& spec);

// Moves whole layers down the option ladder in `order` (see the top). Throws spec_error
// (precision.target_bpw) when even the lowest option exceeds the budget.
void allocate_ordered(Allocation& a, const std::vector<bool>& free, const std::vector<int>& order,
                      const std::vector<int>& bit_options, double target_bpw);
// Knapsack over the free modules with errors from `scores`. Returns the solver used.
std::string allocate_sensitivity(Allocation& a, const std::vector<bool>& free, const PrecisionScores& scores,
                                 double target_bpw);

// Whether the policy needs the measurement pass (lim, zd, sensitivity); random needs none.
bool policy_needs_measurement(const std::string& policy);
bool policy_is_score_driven(const std::string& policy);  // lim, zd, random, sensitivity
// Checks the spec for a score-driven policy (method gptq or rtn: the others fix their bits).
void precision_policy_check(const JobSpec& spec);
// allocate_base, then the spec's policy with `scores` (may be empty for random). Returns the
// allocation and records the solver in *solver when given.
Allocation allocate_precision(const ModelConfig& c, const JobSpec& spec, const PrecisionScores& scores,
                              std::string* solver = nullptr);

// ------------------------------------------------------------------------- measurement
// Predicted error of every free linear of one layer at every option: each option's GPTQ
// quantization of the layer (Hessians in `calib`, the unquantized model's statistics) and,
// per linear, the probe's KL with that linear alone replaced by its dequantized form (16:
// zero). Cost per layer: |options| GPTQ passes and |options| × 7 probe reruns of layers l..L.
std::map<std::string, std::vector<double>> measure_layer_sensitivity(
    const LayerSensitivityProbe& probe, const LayerWeights& weights, const LayerCalibration& calib,
    const std::vector<ModuleChoice>& choices, const std::vector<bool>& free, const std::vector<int>& bit_options);

}  // namespace shardq
