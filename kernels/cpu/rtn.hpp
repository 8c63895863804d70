// The uniform integer grid shared by RTN and GPTQ (the reference GPTQ `Quantizer`:
// find_params / quantize of IST-DASLab/gptq quant.py), and round-to-nearest quantization
// with it. Test: shardq_unit_tests --gtest_filter='Rtn*'.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/tensor.hpp"
#include "kernels/quant_types.hpp"

namespace shardq::cpu {

struct GridParams {
  float scale = 1.0f;  // an fp16 value (exactly what is stored)
  float zero = 0.0f;   // an integer in [0, maxq]
};

inline float grid_maxq(int bits) { return static_cast<float>((1 << bits) - 1); }

// The fp16 scale used for a raw scale: the nearest fp16 at or above it (clamped to the
// positive finite fp16 range). Rounding up rather than to nearest keeps [xmin, xmax] inside
// the grid, so RTN's error stays within half a step even at the clipped ends.
float scale_to_fp16_up(float raw);

// Grid of one group from its raw minimum and maximum weight, as the reference find_params:
// asym: xmin = min(w, 0), xmax = max(w, 0), scale = (xmax - xmin) / maxq, zero = round(-xmin/scale);
// sym:  scale = 2 max(|xmin|, xmax) / maxq, zero = (maxq + 1) / 2;
// xmin == xmax (an all-zero group) uses [-1, 1]. The scale is fixed to fp16 before the zero
// is derived from it, so dequantizing from the stored fp16 scale is exact.
GridParams grid_find_params(float xmin, float xmax, int bits, bool sym);

// Code of w on the grid: clamp(round_half_even(w / scale) + zero, 0, maxq) (torch.round).
inline float grid_quantize(float w, float scale, float zero, float maxq) {
  return std::clamp(std::nearbyint(w / scale) + zero, 0.0f, maxq);
}
inline float grid_dequantize(float code, float scale, float zero) { return scale * (code - zero); }

// Round-to-nearest on the grid of each group (group_size consecutive input columns).
QuantizedLinear rtn_quantize(const Tensor& w, const QuantConfig& cfg);

}  // namespace shardq::cpu
