// Names and sizes of the stored quantized-linear form (layout: quant_types.hpp).
#include "kernels/quant_types.hpp"

namespace shardq {

int64_t QuantizedLinear::stored_bytes() const {
  return static_cast<int64_t>(qweight.size() * sizeof(uint32_t) + scales.size() * sizeof(uint16_t) +
                              zeros.size() * sizeof(uint8_t) + g_idx.size() * sizeof(int32_t) +
                              outlier_cols.size() * sizeof(int32_t) +
                              outlier_weights.size() * sizeof(uint16_t));
}

}  // namespace shardq
