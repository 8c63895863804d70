// Relative output error tr(D H Dᵀ) / tr(W H Wᵀ): two sgemms per row tile
// (kernels/output_error.hpp).
#include "kernels/cpu/quant_error.hpp"

#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "common/error.hpp"
#include "kernels/cpu/blas.hpp"

namespace shardq::cpu {
namespace {

// tr(A H Aᵀ) = Σ_r,c A[r,c] (A H)[r,c] for A [rows, cols]; ah is scratch of that size.
double quadratic_trace(const float* a, const std::vector<float>& hs, int64_t rows, int64_t cols,
                       std::vector<float>& ah) {
  gemm_nn(rows, cols, cols, a, hs.data(), ah.data());
  double sum = 0.0;
  for (int64_t i = 0; i < rows * cols; ++i) sum += static_cast<double>(a[i]) * ah[static_cast<size_t>(i)];
  return sum;
}

}  // namespace

std::vector<OutputErrorTraces> output_error_tiles(const Tensor& w, const Tensor& wq, const Tensor& h, int64_t t0,
                                                  int64_t t1) {
  const int64_t rows = w.rows(), cols = w.cols();
  if (w.shape.size() != 2 || wq.shape != w.shape || h.shape.size() != 2 || h.rows() != cols || h.cols() != cols)
    throw error(fmt::format("relative_output_error: weight {}, quantized {}, Hessian {} do not match",
                            shape_string(w.shape), shape_string(wq.shape), shape_string(h.shape)));
  if (t0 < 0 || t1 > output_error_tile_count(rows) || t0 > t1)
    throw error(fmt::format("relative_output_error: tiles [{}, {}) outside the {} of {} rows", t0, t1,
                            output_error_tile_count(rows), rows));
  std::vector<OutputErrorTraces> out;
  if (t0 == t1) return out;
  std::vector<float> hs(static_cast<size_t>(cols * cols));
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = i; j < cols; ++j) hs[i * cols + j] = hs[j * cols + i] = h.at(i, j);
  const int64_t tile_rows = std::min(rows, output_error_row_tile);
  std::vector<float> d(static_cast<size_t>(tile_rows * cols)), ah(d.size());
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t r0 = t * output_error_row_tile, n = std::min(rows, r0 + output_error_row_tile) - r0;
    const float* wt = w.ptr() + r0 * cols;
    const float* qt = wq.ptr() + r0 * cols;
    for (int64_t i = 0; i < n * cols; ++i) d[static_cast<size_t>(i)] = wt[i] - qt[i];
    OutputErrorTraces tile;
    tile.error = quadratic_trace(d.data(), hs, n, cols, ah);
    tile.reference = quadratic_trace(wt, hs, n, cols, ah);
    out.push_back(tile);
  }
  return out;
}

double relative_output_error(const Tensor& w, const Tensor& wq, const Tensor& h) {
  return relative_output_error_of(output_error_tiles(w, wq, h, 0, output_error_tile_count(w.rows())));
}

}  // namespace shardq::cpu
