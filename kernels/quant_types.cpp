// Names and sizes of the stored quantized-linear form (layout: quant_types.hpp).
#include "kernels/quant_types.hpp"

namespace shardq {

int64_t QuantizedLinear::stored_bytes() const {
  return static_cast<int64_t>(qweight.size() * sizeof(uint32_t) + scales.size() * sizeof(uint16_t) +
                              zeros.size() * sizeof(uint8_t) + g_idx.size() * sizeof(int32_t) +
                              outlier_cols.size() * sizeof(int32_t) +
                              outlier_weights.size() * sizeof(uint16_t));
}

QuantizedLinear quantized_linear_alloc(quant_method method, int64_t rows, int64_t cols, int bits, int group_size,
                                       bool sym, bool with_zeros) {
  QuantizedLinear q;
  q.method = method;
  q.rows = rows;
  q.cols = cols;
  q.bits = bits;
  q.group_size = group_size;
  q.sym = sym;
  q.qweight.resize(static_cast<size_t>(rows * q.words_per_row()));
  q.scales.resize(static_cast<size_t>(rows * q.n_groups()));
  if (with_zeros) q.zeros.resize(static_cast<size_t>(rows * q.n_groups()));
  return q;
}

}  // namespace shardq
