// The stored form of one quantized linear weight W [rows = out, cols = in], shared by every
// quantizer (GPTQ, RTN, NF4, int8), the checkpoint writer/reader and dequantization.
//
// Packed layout (documented for other readers; pinned by tests):
//   qweight  uint32 [rows, words_per_row], words_per_row = ceil(cols * bits / 32).
//            Each row is one little-endian bit stream: code of column c occupies bits
//            [c*bits, (c+1)*bits) of the row, counting from bit 0 of word 0 (a 3-bit code
//            may straddle two words). Codes are unsigned in [0, 2^bits - 1].
//   scales   float16 [rows, n_groups]
//   zeros    uint8   [rows, n_groups] integer zero point (gptq/rtn/int8; empty for nf4)
//   g_idx    int32   [cols] group of each input column (act-order only; otherwise the group
//            of column c is c / group_size)
// Dequantization:
//   gptq, rtn, int8: W[r,c] = scales[r,g] * (code[r,c] - zeros[r,g]),  g = group of c
//   nf4:             W[r,c] = scales[r,g] * NF4_LEVELS[code[r,c]]     (scales = absmax)
//   int8 outliers (optional): columns listed in outlier_cols are replaced by the fp16 values
//            outlier_weights [rows, n_outliers].
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace shardq {

enum class quant_method : uint8_t { gptq, rtn, nf4, int8 };
const char* quant_method_name(quant_method m);  // "gptq", "rtn", "nf4", "int8"

struct QuantConfig {
  quant_method method = quant_method::gptq;
  int bits = 4;            // 2, 3, 4 or 8 (nf4: 4, int8: 8)
  int group_size = 128;    // -1: one group per row
  bool sym = false;
  bool act_order = true;   // gptq only
  float damp = 0.01f;      // gptq: damp * mean(diag H) added to the diagonal
  int block_size = 128;    // gptq lazy-batch block
  float int8_outlier_threshold = 0.0f;  // int8: keep input columns with max |x| above it (0: off)
};

struct QuantizedLinear {
  quant_method method = quant_method::gptq;
  int64_t rows = 0;
  int64_t cols = 0;
  int bits = 4;
  int group_size = 128;  // as configured (-1 = per row)
  bool sym = false;
  std::vector<uint32_t> qweight;
  std::vector<uint16_t> scales;
  std::vector<uint8_t> zeros;
  std::vector<int32_t> g_idx;
  std::vector<int32_t> outlier_cols;
  std::vector<uint16_t> outlier_weights;

  int64_t group_cols() const { return group_size <= 0 ? cols : group_size; }
  int64_t n_groups() const { return (cols + group_cols() - 1) / group_cols(); }
  int64_t words_per_row() const { return (cols * bits + 31) / 32; }
  // Stored bytes of all arrays (what the checkpoint holds for this linear).
  int64_t stored_bytes() const;
};

}  // namespace shardq
