// Reference Hessian; see hessian_ref.hpp.
#include "kernels/ref/hessian_ref.hpp"

namespace shardq::ref {

std::vector<double> hessian_ref(const float* x, int64_t n_tokens, int64_t dim) {
  std::vector<double> h(dim * dim, 0.0);
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t i = 0; i < dim; ++i)
      for (int64_t j = 0; j < dim; ++j) h[i * dim + j] += static_cast<double>(x[t * dim + i]) * x[t * dim + j];
  if (n_tokens > 0)
    for (double& v : h) v *= 2.0 / static_cast<double>(n_tokens);
  return h;
}

}  // namespace shardq::ref
