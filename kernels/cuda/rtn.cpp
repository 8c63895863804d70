// RTN on the GPU, host side; see kernels/cuda/rtn.hpp.
#include "kernels/cuda/rtn.hpp"

#include <fmt/format.h>

#include "common/error.hpp"
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/gptq.hpp"
#include "kernels/cuda/pack.hpp"
#include "kernels/quantize.hpp"

namespace shardq::cuda {

void rtn_dequantize_device(const uint8_t* d_codes, const uint16_t* d_scales, const uint8_t* d_zeros, int64_t rows,
                           int64_t cols, int64_t group_cols, float* d_wq, cudaStream_t stream) {
  gptq_dequantize(d_codes, d_scales, d_zeros, nullptr, rows, cols, group_cols, d_wq, stream);
}

QuantizedLinear rtn_quantize_device(const float* d_w, int64_t rows, int64_t cols, const QuantConfig& cfg, float* d_wq,
                                    cudaStream_t stream) {
  quant_config_check(cfg);
  if (rows < 0 || cols < 1) throw error(fmt::format("rtn (cuda): weight shape [{}, {}] has no columns", rows, cols));
  QuantizedLinear q = quantized_linear_alloc(quant_method::rtn, rows, cols, cfg.bits, cfg.group_size, cfg.sym, true);
  if (rows == 0) return q;
  DeviceBuffer<uint8_t> d_codes(static_cast<std::size_t>(rows * cols)), d_zeros(q.zeros.size());
  DeviceBuffer<uint16_t> d_scales(q.scales.size());
  DeviceBuffer<uint32_t> d_q(q.qweight.size());
  rtn_codes(d_w, rows, cols, q.group_cols(), cfg.bits, cfg.sym, d_codes.get(), d_scales.get(), d_zeros.get(), stream);
  pack_codes(d_codes.get(), rows, cols, cfg.bits, d_q.get(), stream);
  if (d_wq) rtn_dequantize_device(d_codes.get(), d_scales.get(), d_zeros.get(), rows, cols, q.group_cols(), d_wq, stream);
  copy_async(q.qweight.data(), d_q.get(), d_q.size(), stream);
  copy_async(q.scales.data(), d_scales.get(), d_scales.size(), stream);
  copy_async(q.zeros.data(), d_zeros.get(), d_zeros.size(), stream);
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream));  // before the temporaries are freed
  return q;
}

QuantizedLinear rtn_quantize_cuda(const Tensor& w, const QuantConfig& cfg) {
  unique_stream stream = make_stream();  // blocking: ordered with to_device's cudaMemcpy
  const DeviceBuffer<float> d_w = to_device(w.data);
  return rtn_quantize_device(d_w.get(), w.rows(), w.cols(), cfg, nullptr, stream.get());
}

}  // namespace shardq::cuda
