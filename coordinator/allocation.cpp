#include "coordinator/allocation.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "common/error.hpp"

namespace shardq {

const ModuleChoice& Allocation::find(const std::string& name) const {
  for (const auto& m : modules) {
    if (m.module.name == name) return m;
  }
  throw error(fmt::format("allocation has no module '{}'", name));
}

double Allocation::avg_bits() const {
  double bits = 0, params = 0;
  for (const auto& m : modules) {
    bits += static_cast<double>(m.bits()) * static_cast<double>(m.module.params());
    params += static_cast<double>(m.module.params());
  }
  return params > 0 ? bits / params : 0.0;
}

// JSON objects are unordered, so precedence cannot come from the order written: when
// several patterns match a module the most specific one (most non-wildcard characters) wins,
// ties broken by the pattern text.
void apply_overrides(Allocation& a, const JobSpec& spec) {
  auto literal = [](const std::string& p) { return std::count_if(p.begin(), p.end(), [](char ch) { return ch != '*' && ch != '?'; }); };
  std::vector<const ModuleOverride*> order;
  for (const auto& o : spec.precision.overrides) order.push_back(&o);
  std::sort(order.begin(), order.end(), [&](const ModuleOverride* x, const ModuleOverride* y) {
    return std::pair(literal(x->pattern), x->pattern) < std::pair(literal(y->pattern), y->pattern);
  });
  for (const ModuleOverride* op : order) {
    const ModuleOverride& o = *op;
    for (auto& m : a.modules) {
      if (!glob_match(o.pattern, m.module.name)) continue;
      if (o.bits && *o.bits == 16) {
        m.quantized = false;
        continue;
      }
      m.quantized = true;
      if (o.method) m.quant = quant_config_for_method(m.quant, *o.method);
      if (o.bits) m.quant.bits = *o.bits;
      if (o.group_size) m.quant.group_size = *o.group_size;
    }
  }
}

Allocation allocate_base(const ModelConfig& c, const JobSpec& spec) {
  Allocation a;
  const auto& keep = spec.precision.keep_fp16_layer_list;
  for (int l : keep) {
    if (l >= c.num_layers)
      throw spec_error("precision.keep_fp16_layers",
                       fmt::format("layer {} is past the model's last layer {}", l, c.num_layers - 1));
  }
  const auto& comps = spec.precision.components;
  for (auto& m : model_modules(c)) {
    ModuleChoice choice{m, true, spec.quant};
    if (spec.precision.policy == "keep" && std::binary_search(keep.begin(), keep.end(), m.layer)) choice.quantized = false;
    if (std::find(comps.begin(), comps.end(), m.component) == comps.end()) choice.quantized = false;
    a.modules.push_back(std::move(choice));
  }
  apply_overrides(a, spec);
  return a;
}

nlohmann::json allocation_to_json(const Allocation& a) {
  nlohmann::json mods = nlohmann::json::array();
  for (const auto& m : a.modules) {
    mods.push_back({{"name", m.module.name},
                    {"quantized", m.quantized},
                    {"method", static_cast<int>(m.quant.method)},
                    {"bits", m.quant.bits},
                    {"group_size", m.quant.group_size},
                    {"sym", m.quant.sym},
                    {"act_order", m.quant.act_order},
                    {"damp", m.quant.damp},
                    {"block_size", m.quant.block_size},
                    {"outlier_threshold", m.quant.int8_outlier_threshold}});
  }
  return mods;
}

Allocation allocation_from_json(const nlohmann::json& j, const ModelConfig& c) {
  Allocation a;
  const auto modules = model_modules(c);
  if (j.size() != modules.size()) throw error("allocation does not match the model's modules");
  for (size_t i = 0; i < modules.size(); ++i) {
    const auto& m = j[i];
    ModuleChoice choice{modules[i], m.at("quantized").get<bool>(), {}};
    choice.quant.method = static_cast<quant_method>(m.at("method").get<int>());
    choice.quant.bits = m.at("bits").get<int>();
    choice.quant.group_size = m.at("group_size").get<int>();
    choice.quant.sym = m.at("sym").get<bool>();
    choice.quant.act_order = m.at("act_order").get<bool>();
    choice.quant.damp = m.at("damp").get<float>();
    choice.quant.block_size = m.at("block_size").get<int>();
    choice.quant.int8_outlier_threshold = m.at("outlier_threshold").get<float>();
    a.modules.push_back(std::move(choice));
  }
  return a;
}

}  // namespace shardq
