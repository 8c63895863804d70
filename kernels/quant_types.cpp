// Names and sizes of the stored quantized-linear form (layout: quant_types.hpp).
#include "kernels/quant_types.hpp"

namespace shardq {

const char* quant_method_name(quant_method m) {
  switch (m) {
    case quant_method::gptq: return "gptq";
    case quant_method::rtn: return "rtn";
    case quant_method::nf4: return "nf4";
    case quant_method::int8: return "int8";
  }
  return "?";
}

int64_t QuantizedLinear::stored_bytes() const {
  return static_cast<int64_t>(qweight.size() * sizeof(uint32_t) + scales.size() * sizeof(uint16_t) +
                              zeros.size() * sizeof(uint8_t) + g_idx.size() * sizeof(int32_t) +
                              outlier_cols.size() * sizeof(int32_t) +
                              outlier_weights.size() * sizeof(uint16_t));
}

}  // namespace shardq
