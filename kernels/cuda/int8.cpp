// int8 on the GPU, host side; see kernels/cuda/int8.hpp.
#include "kernels/cuda/int8.hpp"

#include <fmt/format.h>

#include "common/error.hpp"
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/pack.hpp"

namespace shardq::cuda {
QuantizedLinear int8_quantize_device(const float* d_w, int64_t rows, int64_t cols, float outlier_threshold,
                                     float* d_wq, cudaStream_t stream) {
  if (rows < 0 || cols < 1) throw error(fmt::format("int8 (cuda): weight shape [{}, {}] has no columns", rows, cols));
  // cpu::int8_quantize's stored form: 8 bits, one group per row, sym, zeros all 128.
  QuantizedLinear q = quantized_linear_alloc(quant_method::int8, rows, cols, 8, -1, true, false);
  const auto n_weights = static_cast<std::size_t>(rows * cols);

  // The outlier decision is the CPU tier's own comparison on the same (exact) column maxima.
  std::vector<uint8_t> is_outlier(static_cast<std::size_t>(cols), 0);
  if (outlier_threshold > 0.0f && rows > 0) {
    DeviceBuffer<float> d_col_max(static_cast<std::size_t>(cols));
    int8_column_absmax(d_w, rows, cols, d_col_max.get(), stream);
    std::vector<float> col_max(static_cast<std::size_t>(cols));
    copy_async(col_max.data(), d_col_max.get(), col_max.size(), stream);
    SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream));
    for (int64_t c = 0; c < cols; ++c) {
      if (col_max[c] > outlier_threshold) {
        is_outlier[c] = 1;
        q.outlier_cols.push_back(static_cast<int32_t>(c));
      }
    }
  }
  const auto n_out = static_cast<int64_t>(q.outlier_cols.size());
  q.outlier_weights.resize(static_cast<std::size_t>(rows * n_out));
  q.zeros.assign(static_cast<std::size_t>(rows), static_cast<uint8_t>(int8_zero));
  if (rows == 0) return q;

  DeviceBuffer<uint8_t> d_is_outlier(is_outlier.size()), d_codes(n_weights);
  DeviceBuffer<int32_t> d_outlier_cols(q.outlier_cols.size());
  DeviceBuffer<uint16_t> d_scales(q.scales.size()), d_outlier_weights(q.outlier_weights.size());
  DeviceBuffer<uint32_t> d_q(q.qweight.size());
  copy_async(d_is_outlier.get(), is_outlier.data(), is_outlier.size(), stream);
  copy_async(d_outlier_cols.get(), q.outlier_cols.data(), q.outlier_cols.size(), stream);
  int8_codes(d_w, rows, cols, d_is_outlier.get(), d_outlier_cols.get(), n_out, d_codes.get(), d_scales.get(),
             d_outlier_weights.get(), stream);
  pack_codes(d_codes.get(), rows, cols, 8, d_q.get(), stream);
  if (d_wq)
    int8_dequantize_device(d_codes.get(), d_scales.get(), d_outlier_cols.get(), n_out, d_outlier_weights.get(), rows,
                           cols, d_wq, stream);
  copy_async(q.qweight.data(), d_q.get(), q.qweight.size(), stream);
  copy_async(q.scales.data(), d_scales.get(), q.scales.size(), stream);
  copy_async(q.outlier_weights.data(), d_outlier_weights.get(), q.outlier_weights.size(),
             stream);
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream));  // before the temporaries are freed
  return q;
}

QuantizedLinear int8_quantize_cuda(const Tensor& w, float outlier_threshold) {
  unique_stream stream = make_stream();  // blocking: ordered with to_device's cudaMemcpy
  const DeviceBuffer<float> d_w = to_device(w.data);
  return int8_quantize_device(d_w.get(), w.rows(), w.cols(), outlier_threshold, nullptr, stream.get());
}

}  // namespace shardq::cuda
