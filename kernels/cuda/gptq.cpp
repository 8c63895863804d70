// GPTQ on the GPU, host driver; see kernels/cuda/gptq.hpp.
#include "kernels/cuda/gptq.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "common/error.hpp"
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/pack.hpp"
#include "kernels/quantize.hpp"

namespace shardq::cuda {

void gptq_quantize_rows_cuda(const Tensor& w, const cpu::GptqFactor& factor, const QuantConfig& cfg, int64_t r0,
                             int64_t r1, QuantizedLinear& out) {
  quant_config_check(cfg);
  const int64_t rows = w.rows(), cols = factor.cols;
  if (w.shape.size() != 2 || w.cols() != cols)
    throw error(fmt::format("gptq (cuda): weight {} does not match the Hessian's {} columns", shape_string(w.shape), cols));
  if (out.rows != rows || out.cols != cols || out.bits != cfg.bits ||
      static_cast<int64_t>(out.scales.size()) != rows * out.n_groups())
    throw error("gptq (cuda): output was not made by gptq_make_output for this weight and config");
  if (r0 < 0 || r1 > rows || r0 > r1)
    throw error(fmt::format("gptq (cuda): row range [{}, {}) outside [0, {})", r0, r1, rows));
  if (r0 == r1) return;

  const int64_t n = r1 - r0, n_groups = out.n_groups(), wpr = out.words_per_row();
  const int64_t gcols = cfg.group_size > 0 ? cfg.group_size : cols, block = cfg.block_size;
  unique_stream stream = make_stream();
  unique_cublas cublas = make_cublas(stream.get());

  DeviceBuffer<float> d_u = to_device(factor.hinv_chol);
  DeviceBuffer<int32_t> d_perm = to_device(factor.perm);
  DeviceBuffer<uint8_t> d_dead = to_device(factor.dead);
  DeviceBuffer<float> d_wt(static_cast<std::size_t>(n * cols));
  {
    DeviceBuffer<float> d_w = to_device(w.ptr() + r0 * cols, static_cast<std::size_t>(n * cols));
    gptq_permute_transpose(d_w.get(), n, cols, d_perm.get(), d_dead.get(), d_wt.get(), stream.get());
    SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  }
  DeviceBuffer<float> d_err(static_cast<std::size_t>(std::min(block, cols) * n));
  DeviceBuffer<uint8_t> d_codes_t(static_cast<std::size_t>(n * cols));
  DeviceBuffer<float> d_scale(static_cast<std::size_t>(n)), d_zero(static_cast<std::size_t>(n));
  DeviceBuffer<uint16_t> d_scales(static_cast<std::size_t>(n * n_groups));
  DeviceBuffer<uint8_t> d_zeros(static_cast<std::size_t>(n * n_groups));

  const float minus_one = -1.0f, one = 1.0f;
  for (int64_t b0 = 0; b0 < cols; b0 += block) {
    const int64_t b1 = std::min(cols, b0 + block);
    gptq_block(d_wt.get(), d_err.get(), d_codes_t.get(), d_scale.get(), d_zero.get(), d_scales.get(), d_zeros.get(),
               d_u.get(), n, cols, b0, b1, gcols, cfg.bits, cfg.sym, stream.get());
    if (b1 < cols) {
      // Column-major view: Wt is W [n, cols] (ld n), Err is [n, b1-b0] (ld n), and the row-major
      // panel U[b0:b1, b1:] read with ld cols is its transpose, hence op T.
      SHARDQ_CUDA_CHECK(cublasSgemm(cublas.get(), CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(n),
                                    static_cast<int>(cols - b1), static_cast<int>(b1 - b0), &minus_one, d_err.get(),
                                    static_cast<int>(n), d_u.get() + b0 * cols + b1, static_cast<int>(cols), &one,
                                    d_wt.get() + b1 * n, static_cast<int>(n)));
    }
  }
  d_wt = DeviceBuffer<float>();
  DeviceBuffer<uint8_t> d_codes(static_cast<std::size_t>(n * cols));
  gptq_unpermute_codes(d_codes_t.get(), d_perm.get(), n, cols, d_codes.get(), stream.get());
  DeviceBuffer<uint32_t> d_q(static_cast<std::size_t>(n * wpr));
  pack_codes(d_codes.get(), n, cols, cfg.bits, d_q.get(), stream.get());
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  d_q.download(out.qweight.data() + r0 * wpr, static_cast<std::size_t>(n * wpr));
  d_scales.download(out.scales.data() + r0 * n_groups, static_cast<std::size_t>(n * n_groups));
  d_zeros.download(out.zeros.data() + r0 * n_groups, static_cast<std::size_t>(n * n_groups));
}

QuantizedLinear gptq_quantize_cuda(const Tensor& w, const Tensor& h, const QuantConfig& cfg) {
  const cpu::GptqFactor factor = cpu::gptq_prepare(h, cfg);
  QuantizedLinear out = cpu::gptq_make_output(w.rows(), factor, cfg);
  gptq_quantize_rows_cuda(w, factor, cfg, 0, w.rows(), out);
  return out;
}

}  // namespace shardq::cuda
