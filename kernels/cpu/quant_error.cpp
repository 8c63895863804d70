// Relative output error tr(D H Dᵀ) / tr(W H Wᵀ) with two sgemms.
#include "kernels/cpu/quant_error.hpp"

#include <cmath>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "common/error.hpp"
#include "kernels/cpu/blas.hpp"

namespace shardq::cpu {
namespace {

// tr(A H Aᵀ) = Σ_r,c A[r,c] (A H)[r,c]
double quadratic_trace(const std::vector<float>& a, const std::vector<float>& hs, int64_t rows, int64_t cols) {
  std::vector<float> ah(static_cast<size_t>(rows * cols));
  gemm_nn(rows, cols, cols, a.data(), hs.data(), ah.data());
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) sum += static_cast<double>(a[i]) * ah[i];
  return sum;
}

}  // namespace

double relative_output_error(const Tensor& w, const Tensor& wq, const Tensor& h) {
  const int64_t rows = w.rows(), cols = w.cols();
  if (wq.shape != w.shape || h.rows() != cols || h.cols() != cols)
    throw error(fmt::format("relative_output_error: weight {}, quantized {}, Hessian {} do not match",
                            shape_string(w.shape), shape_string(wq.shape), shape_string(h.shape)));
  std::vector<float> hs(static_cast<size_t>(cols * cols));
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = i; j < cols; ++j) hs[i * cols + j] = hs[j * cols + i] = h.at(i, j);
  std::vector<float> d(w.data.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = w.data[i] - wq.data[i];
  const double num = quadratic_trace(d, hs, rows, cols);
  const double den = quadratic_trace(w.data, hs, rows, cols);
  if (den == 0.0) return num == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return num / den;
}

}  // namespace shardq::cpu
