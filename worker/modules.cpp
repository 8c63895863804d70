#include "worker/modules.hpp"

namespace shardq {

std::vector<LinearModule> layer_modules(const ModelConfig& c, int layer) {
  const std::string p = layer_prefix(layer);
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), i = c.intermediate_size;
  return {
      {p + "self_attn.q_proj", layer, "q_proj", "attn", q, h},
      {p + "self_attn.k_proj", layer, "k_proj", "attn", kv, h},
      {p + "self_attn.v_proj", layer, "v_proj", "attn", kv, h},
      {p + "self_attn.o_proj", layer, "o_proj", "attn", h, q},
      {p + "mlp.gate_proj", layer, "gate_proj", "mlp", i, h},
      {p + "mlp.up_proj", layer, "up_proj", "mlp", i, h},
      {p + "mlp.down_proj", layer, "down_proj", "mlp", h, i},
  };
}

std::vector<LinearModule> model_modules(const ModelConfig& c) {
  std::vector<LinearModule> all;
  for (int l = 0; l < c.num_layers; ++l) {
    auto m = layer_modules(c, l);
    all.insert(all.end(), m.begin(), m.end());
  }
  return all;
}

}  // namespace shardq
