// int8 vector-wise quantization with optional fp16 outlier columns (LLM.int8).
#include "kernels/cpu/int8.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/dtype.hpp"
#include "kernels/cpu/pack.hpp"
#include "kernels/cpu/rtn.hpp"

namespace shardq::cpu {

QuantizedLinear int8_quantize(const Tensor& w, float outlier_threshold) {
  QuantizedLinear q = quantized_linear_alloc(quant_method::int8, w.rows(), w.cols(), 8, -1, true, false);
  const int64_t rows = q.rows, cols = q.cols;

  std::vector<uint8_t> is_outlier(static_cast<size_t>(cols), 0);
  if (outlier_threshold > 0.0f) {
    std::vector<float> col_max(static_cast<size_t>(cols), 0.0f);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) col_max[c] = std::max(col_max[c], std::fabs(w.at(r, c)));
    for (int64_t c = 0; c < cols; ++c) {
      if (col_max[c] > outlier_threshold) {
        is_outlier[c] = 1;
        q.outlier_cols.push_back(static_cast<int32_t>(c));
      }
    }
  }
  const int64_t n_out = static_cast<int64_t>(q.outlier_cols.size());
  q.outlier_weights.resize(static_cast<size_t>(rows * n_out));
  q.zeros.assign(static_cast<size_t>(rows), static_cast<uint8_t>(int8_zero));
  std::vector<uint8_t> codes(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = w.ptr() + r * cols;
    float absmax = 0.0f;
    for (int64_t c = 0; c < cols; ++c)
      if (!is_outlier[c]) absmax = std::max(absmax, std::fabs(row[c]));
    const float scale = absmax > 0.0f ? scale_to_fp16_up(absmax / 127.0f) : 0.0f;
    for (int64_t c = 0; c < cols; ++c) {
      float v = 0.0f;
      if (!is_outlier[c] && scale > 0.0f) v = std::clamp(std::nearbyint(row[c] / scale), -127.0f, 127.0f);
      codes[c] = static_cast<uint8_t>(static_cast<int>(v) + int8_zero);
    }
    for (int64_t j = 0; j < n_out; ++j) q.outlier_weights[r * n_out + j] = fp32_to_fp16(row[q.outlier_cols[j]]);
    q.scales[r] = fp32_to_fp16(scale);
    pack_row(codes.data(), cols, 8, q.qweight.data() + r * q.words_per_row());
  }
  return q;
}

}  // namespace shardq::cpu
