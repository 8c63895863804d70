// Relative output error on the GPU, host driver; see kernels/cuda/quant_error.hpp.
#include "kernels/cuda/quant_error.hpp"

#include <algorithm>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "common/error.hpp"
#include "kernels/cuda/cuda_check.hpp"

namespace shardq::cuda {

double relative_output_error_cuda(const float* d_w, const float* d_wq, const float* d_h, int64_t rows, int64_t cols,
                                  cudaStream_t stream) {
  if (rows < 0 || cols < 0)
    throw error(fmt::format("relative_output_error (cuda): negative shape [{}, {}]", rows, cols));
  if (rows == 0 || cols == 0) return 0.0;  // both traces are empty sums
  constexpr int64_t chunk_elements = int64_t{1} << 24;
  const int64_t chunk = std::clamp<int64_t>(chunk_elements / cols, 1, rows);
  const int64_t n_chunks = (rows + chunk - 1) / chunk;
  unique_cublas cublas = make_cublas(stream);  // pedantic fp32
  DeviceBuffer<float> d_d(static_cast<std::size_t>(chunk * cols)), d_ah(static_cast<std::size_t>(chunk * cols));
  // [chunk][numerator, denominator][block]
  DeviceBuffer<double> d_partials(static_cast<std::size_t>(n_chunks * 2 * quant_error_blocks));
  const float one = 1.0f, zero = 0.0f;
  // Row-major AH [m, cols] = A · H is column-major (AH)ᵀ = Hᵀ · Aᵀ with both stored as they are.
  auto quadratic = [&](const float* d_a, int64_t m, double* d_out) {
    SHARDQ_CUDA_CHECK(cublasSgemm(cublas.get(), CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(cols), static_cast<int>(m),
                                  static_cast<int>(cols), &one, d_h, static_cast<int>(cols), d_a,
                                  static_cast<int>(cols), &zero, d_ah.get(), static_cast<int>(cols)));
    quant_error_dot(d_a, d_ah.get(), m * cols, d_out, stream);
  };
  for (int64_t k = 0; k < n_chunks; ++k) {
    const int64_t r0 = k * chunk, m = std::min(chunk, rows - r0);
    double* out = d_partials.get() + k * 2 * quant_error_blocks;
    quant_error_diff(d_w + r0 * cols, d_wq + r0 * cols, m * cols, d_d.get(), stream);
    quadratic(d_d.get(), m, out);
    quadratic(d_w + r0 * cols, m, out + quant_error_blocks);
  }
  std::vector<double> partials(d_partials.size());
  SHARDQ_CUDA_CHECK(cudaMemcpyAsync(partials.data(), d_partials.get(), d_partials.bytes(), cudaMemcpyDeviceToHost,
                                    stream));
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream));
  double num = 0.0, den = 0.0;
  for (int64_t k = 0; k < n_chunks; ++k)
    for (int b = 0; b < quant_error_blocks; ++b) {
      num += partials[static_cast<std::size_t>((k * 2) * quant_error_blocks + b)];
      den += partials[static_cast<std::size_t>((k * 2 + 1) * quant_error_blocks + b)];
    }
  if (den == 0.0) return num == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return num / den;
}

}  // namespace shardq::cuda
