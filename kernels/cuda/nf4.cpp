// NF4 on the GPU, host side; see kernels/cuda/nf4.hpp.
#include "kernels/cuda/nf4.hpp"

#include <fmt/format.h>

#include "common/error.hpp"
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/pack.hpp"

namespace shardq::cuda {

QuantizedLinear nf4_quantize_device(const float* d_w, int64_t rows, int64_t cols, float* d_wq, cudaStream_t stream) {
  if (rows < 0 || cols < 0) throw error(fmt::format("nf4 (cuda): negative weight shape [{}, {}]", rows, cols));
  // cpu::nf4_quantize's stored form: 4 bits, blocks of 64, sym, no zeros.
  QuantizedLinear q = quantized_linear_alloc(quant_method::nf4, rows, cols, 4, nf4_block_size, true, false);
  if (rows <= 0 || cols <= 0) return q;
  DeviceBuffer<uint8_t> d_codes(static_cast<std::size_t>(rows * cols));
  DeviceBuffer<uint16_t> d_scales(q.scales.size());
  DeviceBuffer<uint32_t> d_q(q.qweight.size());
  nf4_codes(d_w, rows, cols, d_codes.get(), d_scales.get(), stream);
  pack_codes(d_codes.get(), rows, cols, 4, d_q.get(), stream);
  if (d_wq) nf4_dequantize_device(d_codes.get(), d_scales.get(), rows, cols, d_wq, stream);
  copy_async(q.qweight.data(), d_q.get(), d_q.size(), stream);
  copy_async(q.scales.data(), d_scales.get(), d_scales.size(), stream);
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream));  // before the temporaries are freed
  return q;
}

QuantizedLinear nf4_quantize_cuda(const Tensor& w) {
  unique_stream stream = make_stream();  // blocking: ordered with to_device's cudaMemcpy
  const DeviceBuffer<float> d_w = to_device(w.data);
  return nf4_quantize_device(d_w.get(), w.rows(), w.cols(), nullptr, stream.get());
}

}  // namespace shardq::cuda
