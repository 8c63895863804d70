// The floating-point work a quantize job does, counted as its steps run, so that a resumed
// job can report what it redid as a fraction of the whole (manifest "run.work_fraction").
// Counts are multiply-adds × 2 of the dominant operations:
//   layer forward over n sequences of s tokens   2·n·s·P + 4·n·s(s+1)/2·q_dim   (P: the
//                                                layer's linear parameters; causal attention)
//   Hessians of a layer over t tokens            t·(2·hidden² + q_dim² + intermediate²)
//                                                (symmetric rank-k updates: half of 2·t·d²)
//   GPTQ of a [rows, cols] linear                rows·cols² + cols³ (the updates: Σ_j 2·rows·(cols−j),
//                                                in-block and lazy-batch alike; the H⁻¹ factor)
//   RTN / NF4 / int8 of a [rows, cols] linear    4·rows·cols
//   its relative output error (every method)     4·rows·cols² (tr(D H Dᵀ) and tr(W H Wᵀ))
// The measurement pass of score-driven policies is not counted: its decision is journalled
// and never redone.
#pragma once

#include <string>
#include <vector>

#include "common/model_config.hpp"
#include "coordinator/allocation.hpp"
#include "worker/modules.hpp"

namespace shardq {

double layer_forward_flops(const ModelConfig& c, int n_seq, int seq_len);
double layer_hessian_flops(const ModelConfig& c, int n_seq, int seq_len);
double layer_quantize_flops(const std::vector<ModuleChoice>& choices);

// What an uninterrupted job of `schedule` does over `samples` windows (no resume):
//   pipeline    every layer: forward + Hessians, then quantize
//   sequential  every layer: forward + Hessians, quantize, forward with the quantized weights
// (without calibration windows: quantize only).
double full_job_flops(const ModelConfig& c, const Allocation& allocation, const std::string& schedule, int samples,
                      int seq_len);

}  // namespace shardq
