// The stored form of one quantized linear weight W [rows = out, cols = in], shared by every
// quantizer (GPTQ, RTN, NF4, int8), the checkpoint writer/reader and dequantization.
//
// Packed layout (documented for other readers; pinned by tests/unit/test_pack.cpp):
//   qweight  uint32 [rows, words_per_row], words_per_row = ceil(cols * bits / 32).
//            Each row is one little-endian bit stream: code of column c occupies bits
//            [c*bits, (c+1)*bits) of the row, counting from bit 0 of word 0 (a 3-bit code
//            may straddle two words); unused high bits of a row's last word are zero.
//            Codes are unsigned in [0, 2^bits - 1].
//   scales   float16 [rows, n_groups]
//   zeros    uint8   [rows, n_groups] integer zero point in [0, 2^bits - 1]
//            (gptq/rtn/int8; empty for nf4)
//   g_idx    int32   [cols] group of each input column; present exactly when GPTQ ran with
//            act-order (otherwise empty and the group of column c is c / group_cols()).
// Groups: group_size consecutive input columns (the last group is partial when cols is not a
// multiple); group_size -1 is one group per row. nf4 always uses blocks of 64 columns
// (bitsandbytes' blocksize 64), int8 always one group per row.
// Dequantization (fp32 arithmetic, one rounding: the product below):
//   gptq, rtn, int8: W[r,c] = scales[r,g] * (code[r,c] - zeros[r,g]),  g = group of c
//                    int8: bits 8, zeros 128, codes in [1, 255] (signed value code - 128)
//   nf4:             W[r,c] = scales[r,g] * nf4_levels[code[r,c]]     (scales = absmax)
//   int8 outliers (optional): the input columns listed in outlier_cols (ascending) hold code
//            128 in qweight and are replaced by the fp16 values outlier_weights
//            [rows, n_outliers] (column j of outlier_weights is input column outlier_cols[j]).
// The quantizers choose each scale as an fp16 value first and quantize with that value, so
// dequantizing from the stored fp16 scales reproduces exactly what the quantizer meant.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shardq {

enum class quant_method : uint8_t { gptq, rtn, nf4, int8 };
// The one spelling of each method, shared by the job spec, the checkpoint attributes and
// the manifest (header-only so that common/ can use it without linking the kernels).
inline constexpr const char* quant_method_name(quant_method m) {
  switch (m) {
    case quant_method::gptq: return "gptq";
    case quant_method::rtn: return "rtn";
    case quant_method::nf4: return "nf4";
    case quant_method::int8: return "int8";
  }
  return "?";
}
inline std::optional<quant_method> quant_method_from_name(std::string_view name) {
  for (quant_method m : {quant_method::gptq, quant_method::rtn, quant_method::nf4, quant_method::int8}) {
    if (name == quant_method_name(m)) return m;
  }
  return std::nullopt;
}

// The 16 NormalFloat4 levels of QLoRA (Dettmers et al. 2023, Appendix E), exactly as the
// float32 table `nf4_data` in bitsandbytes csrc/kernels.cu (code k = index k, sorted).
inline constexpr std::array<float, 16> nf4_levels = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
inline constexpr int nf4_block_size = 64;
inline constexpr int int8_zero = 128;

struct QuantConfig {
  quant_method method = quant_method::gptq;
  int bits = 4;            // 2, 3, 4 or 8 for gptq/rtn (nf4 is always 4, int8 always 8)
  int group_size = 128;    // -1: one group per row (gptq/rtn; nf4 uses 64, int8 per row)
  bool sym = false;
  bool act_order = true;   // gptq only
  float damp = 0.01f;      // gptq: damp * mean(diag H) added to the diagonal
  int block_size = 128;    // gptq lazy-batch block
  // int8: input columns whose largest weight magnitude max_r |W[r,c]| exceeds it are kept in
  // fp16 (LLM.int8's outlier decomposition, decided on the weight so that no activation
  // statistics are needed); 0: off.
  float int8_outlier_threshold = 0.0f;
};

struct QuantizedLinear {
  quant_method method = quant_method::gptq;
  int64_t rows = 0;
  int64_t cols = 0;
  int bits = 4;
  int group_size = 128;  // as used (-1 = per row)
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

// An empty stored form of a [rows, cols] linear with qweight and scales sized (zeros too
// when `with_zeros`); every quantizer starts from it and fills the arrays.
QuantizedLinear quantized_linear_alloc(quant_method method, int64_t rows, int64_t cols, int bits, int group_size,
                                       bool sym, bool with_zeros);

}  // namespace shardq
