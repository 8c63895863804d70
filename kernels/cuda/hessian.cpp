// GPU Hessian accumulator, host side; see kernels/cuda/hessian.hpp.
#include "kernels/cuda/hessian.hpp"

#include <fmt/format.h>

#include "common/error.hpp"

namespace shardq::cuda {

HessianAccumulatorCuda::HessianAccumulatorCuda(int64_t dim)
    : dim_(dim),
      stream_(make_stream()),
      cublas_(make_cublas(stream_.get())),
      sums_(dim > 0 ? static_cast<std::size_t>(dim * (dim + 1) / 2) : 0),  // dim checked below
      partial_(dim > 0 ? static_cast<std::size_t>(dim * dim) : 0),
      flags_(1) {
  if (dim < 1) throw error(fmt::format("hessian (cuda): dimension {} must be positive", dim));
  sums_.zero();
  flags_.zero();
}

void HessianAccumulatorCuda::add(const float* d_x, int64_t n_tokens) {
  if (n_tokens <= 0) return;
  // Row-major x [n, dim] is column-major xᵀ [dim, n]; P = xᵀx = (xᵀ)(xᵀ)ᵀ is syrk "N".
  const float one = 1.0f, zero = 0.0f;
  SHARDQ_CUDA_CHECK(cublasSsyrk(cublas_.get(), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, static_cast<int>(dim_),
                                static_cast<int>(n_tokens), &one, d_x, static_cast<int>(dim_), &zero,
                                partial_.get(), static_cast<int>(dim_)));
  hessian_fixed_point_add(partial_.get(), dim_, sums_.get(), flags_.get(), stream_.get());
  n_tokens_ += n_tokens;
  check_flags();
}

void HessianAccumulatorCuda::add_host(const float* x, int64_t n_tokens) {
  if (n_tokens <= 0) return;
  const auto n = static_cast<std::size_t>(n_tokens * dim_);
  if (staging_.size() < n) staging_ = DeviceBuffer<float>(n);
  staging_.upload(x, n);
  add(staging_.get(), n_tokens);
}

void HessianAccumulatorCuda::check_flags() {
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  unsigned flags = 0;
  flags_.download(&flags, 1);
  if (flags & hessian_flag_nonfinite)
    throw error("hessian accumulation (cuda): non-finite activation product (inf or nan in the layer input)");
  if (flags & hessian_flag_range)
    throw error("hessian accumulation (cuda): a partial sum exceeds the fixed-point range (2^62)");
  if (flags & hessian_flag_overflow)
    throw error("hessian accumulation (cuda): the fixed-point sum exceeds 2^63 (activations too large to accumulate exactly)");
}

cpu::HessianAccumulator HessianAccumulatorCuda::download() const {
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  static_assert(sizeof(hessian_int) == sizeof(cpu::hessian_int));
  const std::vector<hessian_int> sums = sums_.to_host();
  cpu::HessianAccumulator out(dim_);
  out.merge_packed(std::span<const cpu::hessian_int>(sums.data(), sums.size()), n_tokens_);
  return out;
}

}  // namespace shardq::cuda
