// Dispatch over the quantization methods, dequantization, and config checks.
#include "kernels/quantize.hpp"

#include <cmath>

#include <fmt/format.h>

#include "common/dtype.hpp"
#include "common/error.hpp"
#include "kernels/cpu/gptq.hpp"
#include "kernels/cpu/int8.hpp"
#include "kernels/cpu/nf4.hpp"
#include "kernels/cpu/pack.hpp"
#include "kernels/cpu/quant_error.hpp"
#include "kernels/cpu/rtn.hpp"

namespace shardq {

void quant_config_check(const QuantConfig& cfg) {
  if (cfg.method == quant_method::gptq || cfg.method == quant_method::rtn) {
    if (cfg.bits != 2 && cfg.bits != 3 && cfg.bits != 4 && cfg.bits != 8)
      throw spec_error("quant.bits", fmt::format("{} is not one of 2, 3, 4, 8", cfg.bits));
    if (cfg.group_size == 0 || cfg.group_size < -1)
      throw spec_error("quant.group_size", fmt::format("{} must be -1 (per row) or positive", cfg.group_size));
  }
  if (cfg.method == quant_method::gptq) {
    if (cfg.block_size < 1)
      throw spec_error("quant.block_size", fmt::format("{} must be positive", cfg.block_size));
    if (!(cfg.damp >= 0.0f) || !std::isfinite(cfg.damp))
      throw spec_error("quant.damp", fmt::format("{} must be a finite value >= 0", cfg.damp));
  }
  if (cfg.method == quant_method::int8 && !(cfg.int8_outlier_threshold >= 0.0f))
    throw spec_error("quant.int8_outlier_threshold", "must be >= 0");
}

void quantize_check(const Tensor& w, const QuantConfig& cfg) {
  quant_config_check(cfg);
  if (w.shape.size() != 2 || w.rows() < 1 || w.cols() < 1)
    throw error(fmt::format("quantize: weight must be a non-empty matrix, got {}", shape_string(w.shape)));
  for (int64_t i = 0; i < w.numel(); ++i) {
    if (!std::isfinite(w.data[i]))
      throw error(fmt::format("quantize: weight {} has a non-finite value at ({}, {})", shape_string(w.shape),
                              i / w.cols(), i % w.cols()));
  }
}

QuantizedLinear quantize_linear(const Tensor& w, const Tensor& h, const QuantConfig& cfg) {
  quantize_check(w, cfg);
  switch (cfg.method) {
    case quant_method::gptq:
      if (h.empty()) throw error("quantize: gptq needs the layer input Hessian, none given");
      return cpu::gptq_quantize(w, h, cfg);
    case quant_method::rtn: return cpu::rtn_quantize(w, cfg);
    case quant_method::nf4: return cpu::nf4_quantize(w);
    case quant_method::int8: return cpu::int8_quantize(w, cfg.int8_outlier_threshold);
  }
  throw error("quantize: unknown method");
}

Tensor dequantize(const QuantizedLinear& q) {
  const int64_t rows = q.rows, cols = q.cols, n_groups = q.n_groups(), gcols = q.group_cols();
  const char* name = quant_method_name(q.method);
  auto check_size = [&](const char* what, size_t got, int64_t want) {
    io_check(static_cast<int64_t>(got) == want, "{} quantized linear [{}, {}]: {} has {} elements, expected {}",
             name, rows, cols, what, got, want);
  };
  io_check(rows >= 0 && cols >= 0, "{} quantized linear: negative shape [{}, {}]", name, rows, cols);
  io_check(q.bits == 2 || q.bits == 3 || q.bits == 4 || q.bits == 8, "{} quantized linear: bits {} unsupported",
           name, q.bits);
  check_size("scales", q.scales.size(), rows * n_groups);
  if (q.method != quant_method::nf4) check_size("zeros", q.zeros.size(), rows * n_groups);
  if (!q.g_idx.empty()) {
    check_size("g_idx", q.g_idx.size(), cols);
    for (int32_t g : q.g_idx) io_check(g >= 0 && g < n_groups, "{} quantized linear: g_idx value {} out of range", name, g);
  }
  const int64_t n_out = static_cast<int64_t>(q.outlier_cols.size());
  check_size("outlier_weights", q.outlier_weights.size(), rows * n_out);
  for (int32_t c : q.outlier_cols) io_check(c >= 0 && c < cols, "{} quantized linear: outlier column {} out of range", name, c);

  const std::vector<uint8_t> codes = cpu::unpack_codes(q.qweight, rows, cols, q.bits);
  Tensor w({rows, cols});
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t g = q.g_idx.empty() ? c / gcols : q.g_idx[c];
      const float scale = fp16_to_fp32(q.scales[r * n_groups + g]);
      const uint8_t code = codes[r * cols + c];
      w.at(r, c) = q.method == quant_method::nf4
                       ? scale * nf4_levels[code]
                       : scale * static_cast<float>(static_cast<int>(code) - static_cast<int>(q.zeros[r * n_groups + g]));
    }
    for (int64_t j = 0; j < n_out; ++j) w.at(r, q.outlier_cols[j]) = fp16_to_fp32(q.outlier_weights[r * n_out + j]);
  }
  return w;
}

double quant_relative_error(const Tensor& w, const QuantizedLinear& q, const Tensor& h) {
  return cpu::relative_output_error(w, dequantize(q), h);
}

}  // namespace shardq
