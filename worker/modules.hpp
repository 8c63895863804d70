// The quantizable linears of a decoder layer in HF naming, and the choice made for each
// (quantizer and grid, or kept in floating point). Shared by the workers that quantize and
// the coordinator that allocates precision.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/model_config.hpp"
#include "kernels/quant_types.hpp"

namespace shardq {

// One linear of a decoder layer in HF naming.
struct LinearModule {
  std::string name;       // "model.layers.3.self_attn.q_proj" (the tensor is name + ".weight")
  int layer = 0;
  std::string kind;       // q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj
  std::string component;  // attn | mlp
  int64_t rows = 0;       // out features
  int64_t cols = 0;       // in features
  int64_t params() const { return rows * cols; }
};

// The linears of layer `layer`, in forward order.
std::vector<LinearModule> layer_modules(const ModelConfig& c, int layer);
std::vector<LinearModule> model_modules(const ModelConfig& c);

struct ModuleChoice {
  LinearModule module;
  bool quantized = true;  // false: kept in floating point (16 bits)
  QuantConfig quant;      // meaningful when quantized
  int bits() const { return quantized ? quant.bits : 16; }
};

}  // namespace shardq
