// GPTQ on the GPU, host driver; see kernels/cuda/gptq.hpp.
#include "kernels/cuda/gptq.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "common/error.hpp"
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/pack.hpp"
#include "kernels/quantize.hpp"

namespace shardq::cuda {
namespace {

// cpu::gptq_quantize_rows's checks (before anything is uploaded or launched).
void check_request(int64_t rows, int64_t cols, const QuantConfig& cfg, int64_t r0, int64_t r1,
                   const QuantizedLinear& out) {
  quant_config_check(cfg);
  if (out.rows != rows || out.cols != cols || out.bits != cfg.bits || out.group_size != cfg.group_size ||
      static_cast<int64_t>(out.scales.size()) != rows * out.n_groups() ||
      static_cast<int64_t>(out.zeros.size()) != rows * out.n_groups() ||
      static_cast<int64_t>(out.qweight.size()) != rows * out.words_per_row() ||
      (!out.g_idx.empty() && static_cast<int64_t>(out.g_idx.size()) != cols))
    throw error("gptq (cuda): output was not made by gptq_make_output for this weight and config");
  if (r0 < 0 || r1 > rows || r0 > r1)
    throw error(fmt::format("gptq (cuda): row range [{}, {}) outside [0, {})", r0, r1, rows));
}

// The one code path: rows [r0, r1) (checked) whose weights are d_rows [r1 - r0, cols]; the
// dequantized rows go to d_wq_rows [r1 - r0, cols] when it is not null.
void quantize_row_block(const float* d_rows, const GptqFactorCuda& f, const QuantConfig& cfg, int64_t r0, int64_t r1,
                        QuantizedLinear& out, float* d_wq_rows, cudaStream_t stream) {
  const int64_t n = r1 - r0, cols = f.cols, n_groups = out.n_groups(), wpr = out.words_per_row();
  const int64_t gcols = out.group_cols(), block = cfg.block_size;

  DeviceBuffer<float> d_wt(static_cast<std::size_t>(n * cols));
  gptq_permute_transpose(d_rows, n, cols, f.d_perm.get(), f.d_dead.get(), d_wt.get(), stream);
  DeviceBuffer<float> d_err(static_cast<std::size_t>(std::min(block, cols) * n));
  DeviceBuffer<uint8_t> d_codes_t(static_cast<std::size_t>(n * cols));
  DeviceBuffer<float> d_scale(static_cast<std::size_t>(n)), d_zero(static_cast<std::size_t>(n));
  DeviceBuffer<uint16_t> d_scales(static_cast<std::size_t>(n * n_groups));
  DeviceBuffer<uint8_t> d_zeros(static_cast<std::size_t>(n * n_groups));

  for (int64_t b0 = 0; b0 < cols; b0 += block) {
    const int64_t b1 = std::min(cols, b0 + block);
    gptq_block(d_wt.get(), d_err.get(), d_codes_t.get(), d_scale.get(), d_zero.get(), d_scales.get(), d_zeros.get(),
               f.d_u.get(), n, cols, b0, b1, gcols, cfg.bits, cfg.sym, stream);
    gptq_lazy_update(d_wt.get(), d_err.get(), f.d_u.get(), n, cols, b0, b1, stream);
  }
  DeviceBuffer<uint8_t> d_codes(static_cast<std::size_t>(n * cols));
  gptq_unpermute_codes(d_codes_t.get(), f.d_perm.get(), n, cols, d_codes.get(), stream);
  DeviceBuffer<uint32_t> d_q(static_cast<std::size_t>(n * wpr));
  pack_codes(d_codes.get(), n, cols, cfg.bits, d_q.get(), stream);
  DeviceBuffer<int32_t> d_g_idx;
  if (d_wq_rows) {
    if (!out.g_idx.empty()) {
      d_g_idx = DeviceBuffer<int32_t>(out.g_idx.size());
      copy_async(d_g_idx.get(), out.g_idx.data(), out.g_idx.size(), stream);
    }
    gptq_dequantize(d_codes.get(), d_scales.get(), d_zeros.get(), d_g_idx.get(), n, cols, gcols, d_wq_rows, stream);
  }
  copy_async(out.qweight.data() + r0 * wpr, d_q.get(), static_cast<std::size_t>(n * wpr), stream);
  copy_async(out.scales.data() + r0 * n_groups, d_scales.get(), static_cast<std::size_t>(n * n_groups), stream);
  copy_async(out.zeros.data() + r0 * n_groups, d_zeros.get(), static_cast<std::size_t>(n * n_groups), stream);
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream));  // before the temporaries are freed
}

}  // namespace

void gptq_quantize_rows_device(const float* d_w, int64_t rows, const GptqFactorCuda& f, const QuantConfig& cfg,
                               int64_t r0, int64_t r1, QuantizedLinear& out, float* d_wq, cudaStream_t stream) {
  check_request(rows, f.cols, cfg, r0, r1, out);
  if (r0 == r1) return;
  quantize_row_block(d_w + r0 * f.cols, f, cfg, r0, r1, out, d_wq ? d_wq + r0 * f.cols : nullptr, stream);
}

void gptq_quantize_rows_cuda(const Tensor& w, const cpu::GptqFactor& factor, const QuantConfig& cfg, int64_t r0,
                             int64_t r1, QuantizedLinear& out) {
  const int64_t cols = factor.cols;
  if (w.shape.size() != 2 || w.cols() != cols)
    throw error(fmt::format("gptq (cuda): weight {} does not match the Hessian's {} columns", shape_string(w.shape), cols));
  check_request(w.rows(), cols, cfg, r0, r1, out);
  if (r0 == r1) return;
  unique_stream stream = make_stream();  // blocking: ordered with to_device's cudaMemcpy
  const GptqFactorCuda f = gptq_factor_upload(factor, stream.get());
  const DeviceBuffer<float> d_rows = to_device(w.ptr() + r0 * cols, static_cast<std::size_t>((r1 - r0) * cols));
  quantize_row_block(d_rows.get(), f, cfg, r0, r1, out, nullptr, stream.get());
}

QuantizedLinear gptq_quantize_cuda(const Tensor& w, const Tensor& h, const QuantConfig& cfg) {
  const int64_t cols = h.rows();
  if (h.shape.size() != 2 || h.cols() != cols || cols < 1)
    throw error(fmt::format("gptq (cuda): Hessian must be square, got {}", shape_string(h.shape)));
  if (w.shape.size() != 2 || w.cols() != cols)
    throw error(fmt::format("gptq (cuda): weight {} does not match the Hessian's {} columns", shape_string(w.shape), cols));
  unique_stream stream = make_stream();
  GptqFactorCuda f;
  {
    const DeviceBuffer<float> d_h = to_device(h.data);
    f = gptq_prepare_cuda(d_h.get(), cols, cfg, stream.get());  // synchronizes: d_h may go
  }
  QuantizedLinear out = f.make_output(w.rows(), cfg);
  const DeviceBuffer<float> d_w = to_device(w.data);
  gptq_quantize_rows_device(d_w.get(), w.rows(), f, cfg, 0, w.rows(), out, nullptr, stream.get());
  return out;
}

}  // namespace shardq::cuda
