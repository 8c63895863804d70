// RTN on the GPU, host side; see kernels/cuda/rtn.hpp.
#include "kernels/cuda/rtn.hpp"

#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/pack.hpp"
#include "kernels/quantize.hpp"

namespace shardq::cuda {

QuantizedLinear rtn_quantize_cuda(const Tensor& w, const QuantConfig& cfg) {
  quant_config_check(cfg);
  QuantizedLinear q =
      quantized_linear_alloc(quant_method::rtn, w.rows(), w.cols(), cfg.bits, cfg.group_size, cfg.sym, true);
  const int64_t rows = q.rows, cols = q.cols, n_groups = q.n_groups();
  const auto n_param = static_cast<std::size_t>(rows * n_groups);
  DeviceBuffer<float> d_w = to_device(w.data);
  DeviceBuffer<uint8_t> d_codes(static_cast<std::size_t>(rows * cols)), d_zeros(n_param);
  DeviceBuffer<uint16_t> d_scales(n_param);
  DeviceBuffer<uint32_t> d_q(static_cast<std::size_t>(rows * q.words_per_row()));
  rtn_codes(d_w.get(), rows, cols, q.group_cols(), cfg.bits, cfg.sym, d_codes.get(), d_scales.get(), d_zeros.get(),
            nullptr);
  pack_codes(d_codes.get(), rows, cols, cfg.bits, d_q.get(), nullptr);
  SHARDQ_CUDA_CHECK(cudaDeviceSynchronize());
  q.qweight = d_q.to_host();
  q.scales = d_scales.to_host();
  q.zeros = d_zeros.to_host();
  return q;
}

}  // namespace shardq::cuda
