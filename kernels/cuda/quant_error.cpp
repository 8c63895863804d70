// Relative output error on the GPU, host driver; see kernels/cuda/quant_error.hpp.
#include "kernels/cuda/quant_error.hpp"

#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "common/error.hpp"
#include "kernels/cuda/cuda_check.hpp"

namespace shardq::cuda {

std::vector<OutputErrorTraces> output_error_tiles_cuda(const float* d_w, const float* d_wq, const float* d_h,
                                                       int64_t rows, int64_t cols, int64_t t0, int64_t t1,
                                                       cudaStream_t stream) {
  if (rows < 0 || cols < 0)
    throw error(fmt::format("relative_output_error (cuda): negative shape [{}, {}]", rows, cols));
  if (t0 < 0 || t1 > output_error_tile_count(rows) || t0 > t1)
    throw error(fmt::format("relative_output_error (cuda): tiles [{}, {}) outside the {} of {} rows", t0, t1,
                            output_error_tile_count(rows), rows));
  std::vector<OutputErrorTraces> out(static_cast<std::size_t>(t1 - t0));
  if (t0 == t1 || cols == 0) return out;  // empty sums
  const int64_t tile_rows = std::min(rows, output_error_row_tile);
  unique_cublas cublas = make_cublas(stream);  // pedantic fp32
  DeviceBuffer<float> d_d(static_cast<std::size_t>(tile_rows * cols)), d_ah(static_cast<std::size_t>(tile_rows * cols));
  // [tile][error, reference][block]
  DeviceBuffer<double> d_partials(static_cast<std::size_t>((t1 - t0) * 2 * quant_error_blocks));
  const float one = 1.0f, zero = 0.0f;
  // Row-major AH [m, cols] = A · H is column-major (AH)ᵀ = Hᵀ · Aᵀ with both stored as they are.
  auto quadratic = [&](const float* d_a, int64_t m, double* d_out) {
    SHARDQ_CUDA_CHECK(cublasSgemm(cublas.get(), CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(cols), static_cast<int>(m),
                                  static_cast<int>(cols), &one, d_h, static_cast<int>(cols), d_a,
                                  static_cast<int>(cols), &zero, d_ah.get(), static_cast<int>(cols)));
    quant_error_dot(d_a, d_ah.get(), m * cols, d_out, stream);
  };
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t r0 = t * output_error_row_tile, m = std::min(rows, r0 + output_error_row_tile) - r0;
    double* partials = d_partials.get() + (t - t0) * 2 * quant_error_blocks;
    quant_error_diff(d_w + r0 * cols, d_wq + r0 * cols, m * cols, d_d.get(), stream);
    quadratic(d_d.get(), m, partials);
    quadratic(d_w + r0 * cols, m, partials + quant_error_blocks);
  }
  std::vector<double> partials(d_partials.size());
  SHARDQ_CUDA_CHECK(cudaMemcpyAsync(partials.data(), d_partials.get(), d_partials.bytes(), cudaMemcpyDeviceToHost,
                                    stream));
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream));
  for (std::size_t k = 0; k < out.size(); ++k)
    for (int b = 0; b < quant_error_blocks; ++b) {
      out[k].error += partials[(k * 2) * quant_error_blocks + static_cast<std::size_t>(b)];
      out[k].reference += partials[(k * 2 + 1) * quant_error_blocks + static_cast<std::size_t>(b)];
    }
  return out;
}

double relative_output_error_cuda(const float* d_w, const float* d_wq, const float* d_h, int64_t rows, int64_t cols,
                                  cudaStream_t stream) {
  return relative_output_error_of(
      output_error_tiles_cuda(d_w, d_wq, d_h, rows, cols, 0, output_error_tile_count(rows), stream));
}

}  // namespace shardq::cuda
