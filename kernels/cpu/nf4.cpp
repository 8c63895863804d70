// NF4 quantization (QLoRA / bitsandbytes blocksize 64).
#include "kernels/cpu/nf4.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/dtype.hpp"
#include "kernels/cpu/pack.hpp"

namespace shardq::cpu {

uint8_t nf4_code(float x) {
  // Decision boundaries are the midpoints between adjacent levels, as bitsandbytes'
  // dQuantizeNF4 tree (there rounded to float; here exact in double, so this is exactly the
  // nearest level); a value exactly on a midpoint takes the lower level.
  uint8_t code = 0;
  for (int k = 1; k < 16; ++k) {
    const double mid = 0.5 * (static_cast<double>(nf4_levels[k - 1]) + nf4_levels[k]);
    if (x > mid) code = static_cast<uint8_t>(k);
  }
  return code;
}

QuantizedLinear nf4_quantize(const Tensor& w) {
  QuantizedLinear q = quantized_linear_alloc(quant_method::nf4, w.rows(), w.cols(), 4, nf4_block_size, true, false);
  const int64_t rows = q.rows, cols = q.cols, n_groups = q.n_groups();
  std::vector<uint8_t> codes(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = w.ptr() + r * cols;
    for (int64_t g = 0; g < n_groups; ++g) {
      const int64_t c0 = g * nf4_block_size, c1 = std::min<int64_t>(cols, c0 + nf4_block_size);
      float absmax = 0.0f;
      for (int64_t c = c0; c < c1; ++c) absmax = std::max(absmax, std::fabs(row[c]));
      const uint16_t h = fp32_to_fp16(std::min(absmax, 65504.0f));
      const float scale = fp16_to_fp32(h);
      for (int64_t c = c0; c < c1; ++c)
        codes[c] = scale > 0.0f ? nf4_code(std::clamp(row[c] / scale, -1.0f, 1.0f)) : uint8_t{7};
      q.scales[r * n_groups + g] = h;
    }
    pack_row(codes.data(), cols, 4, q.qweight.data() + r * q.words_per_row());
  }
  return q;
}

}  // namespace shardq::cpu
