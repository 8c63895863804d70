// Uniform integer grid (reference GPTQ Quantizer) and round-to-nearest quantization.
#include "kernels/cpu/rtn.hpp"

#include <vector>

#include "common/dtype.hpp"
#include "kernels/cpu/pack.hpp"
#include "kernels/quantize.hpp"

namespace shardq::cpu {

float scale_to_fp16_up(float raw) {
  constexpr float min_fp16 = 5.9604644775390625e-08f;  // 2^-24, smallest positive subnormal
  constexpr float max_fp16 = 65504.0f;
  raw = std::clamp(raw, min_fp16, max_fp16);
  uint16_t h = fp32_to_fp16(raw);
  if (fp16_to_fp32(h) < raw) ++h;  // positive finite: the next pattern is the next value up
  return fp16_to_fp32(h);
}

GridParams grid_find_params(float xmin, float xmax, int bits, bool sym) {
  const float maxq = grid_maxq(bits);
  xmin = std::min(xmin, 0.0f);
  xmax = std::max(xmax, 0.0f);
  if (sym) {
    const float m = std::max(-xmin, xmax);
    xmin = -m;
    xmax = m;
  }
  if (xmin == xmax) {
    xmin = -1.0f;
    xmax = 1.0f;
  }
  GridParams p;
  p.scale = scale_to_fp16_up((xmax - xmin) / maxq);
  p.zero = sym ? std::floor((maxq + 1.0f) / 2.0f)
               : std::clamp(std::nearbyint(-xmin / p.scale), 0.0f, maxq);
  return p;
}

QuantizedLinear rtn_quantize(const Tensor& w, const QuantConfig& cfg) {
  quant_config_check(cfg);
  QuantizedLinear q =
      quantized_linear_alloc(quant_method::rtn, w.rows(), w.cols(), cfg.bits, cfg.group_size, cfg.sym, true);
  const int64_t rows = q.rows, cols = q.cols, gcols = q.group_cols(), n_groups = q.n_groups();
  const float maxq = grid_maxq(cfg.bits);
  std::vector<uint8_t> codes(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = w.ptr() + r * cols;
    for (int64_t g = 0; g < n_groups; ++g) {
      const int64_t c0 = g * gcols, c1 = std::min(cols, c0 + gcols);
      const auto [mn, mx] = std::minmax_element(row + c0, row + c1);
      const GridParams p = grid_find_params(*mn, *mx, cfg.bits, cfg.sym);
      for (int64_t c = c0; c < c1; ++c)
        codes[c] = static_cast<uint8_t>(grid_quantize(row[c], p.scale, p.zero, maxq));
      q.scales[r * n_groups + g] = fp32_to_fp16(p.scale);
      q.zeros[r * n_groups + g] = static_cast<uint8_t>(p.zero);
    }
    pack_row(codes.data(), cols, cfg.bits, q.qweight.data() + r * q.words_per_row());
  }
  return q;
}

}  // namespace shardq::cpu
