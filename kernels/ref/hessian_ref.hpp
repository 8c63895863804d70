// Reference Hessian H = 2/n · Σ_t x_t x_tᵀ (naive loops, double) for the tests of
// kernels/cpu/hessian.hpp.
#pragma once

#include <cstdint>
#include <vector>

namespace shardq::ref {

// x [n_tokens, dim] → H [dim, dim], full symmetric.
std::vector<double> hessian_ref(const float* x, int64_t n_tokens, int64_t dim);

}  // namespace shardq::ref
