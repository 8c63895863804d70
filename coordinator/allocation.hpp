// Precision allocation: which quantizer, how many bits and which group size each linear of
// each decoder layer gets. Policies of the job spec (../shared/DESIGN.md, "precision"):
//   uniform  every linear at quant.bits
//   keep     layers in keep_fp16_layers stay 16-bit, the rest at quant.bits
//            (partial quantization, Kim & Lim)
//   components: only the listed components (attn: q,k,v,o; mlp: gate,up,down) are quantized
//   overrides: per-module settings by glob, applied last
// The score-driven policies (lim, zd, random, sensitivity) refine an allocation built here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/job_spec.hpp"
#include "common/model_config.hpp"
#include "kernels/quant_types.hpp"
#include "worker/modules.hpp"

namespace shardq {

struct Allocation {
  std::vector<ModuleChoice> modules;  // model_modules order
  const ModuleChoice& find(const std::string& name) const;
  // Average stored integer bits per weight over all linears (16 for kept ones).
  double avg_bits() const;
};

// uniform / keep / components, then overrides. Other policies start from this.
Allocation allocate_base(const ModelConfig& c, const JobSpec& spec);
// Re-applies the spec's overrides (glob over module names, in the order written).
void apply_overrides(Allocation& a, const JobSpec& spec);

nlohmann::json allocation_to_json(const Allocation& a);
Allocation allocation_from_json(const nlohmann::json& j, const ModelConfig& c);

}  // namespace shardq
