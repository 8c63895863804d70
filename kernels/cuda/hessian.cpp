// GPU Hessian accumulator, host side; see kernels/cuda/hessian.hpp.
#include "kernels/cuda/hessian.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "common/error.hpp"

namespace shardq::cuda {

HessianPartial::HessianPartial(cudaStream_t stream, matmul_precision precision)
    : stream_(stream), syrk_(make_cublas(stream)), matmul_(stream, precision) {}

void HessianPartial::compute(const float* d_x, int64_t n_tokens, int64_t dim, float* d_partial) {
  if (n_tokens <= 0) return;
  // Row-major x [n, dim] is column-major xᵀ [dim, n]; P = xᵀx = (xᵀ)(xᵀ)ᵀ is syrk "N".
  if (matmul_.precision() == matmul_precision::fp32) {
    const float one = 1.0f, zero = 0.0f;
    SHARDQ_CUDA_CHECK(cublasSsyrk(syrk_.get(), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, static_cast<int>(dim),
                                  static_cast<int>(n_tokens), &one, d_x, static_cast<int>(dim), &zero, d_partial,
                                  static_cast<int>(dim)));
    return;
  }
  // The tensor cores run only through gemm: the lower triangle by column blocks, block
  // [c0, c1) one gemm of rows [c0, dim), about half the products of a full gemm (54 % at
  // dim 14336).
  x_split_.invalidate();  // the buffer holds a new micro-batch
  const MatmulOperand x = x_split_.operand(d_x, static_cast<std::size_t>(n_tokens * dim), matmul_.precision(), stream_);
  const auto rows_from = [&](int64_t c0) {
    return MatmulOperand{x.value + c0, x.big ? x.big + c0 : nullptr, x.small ? x.small + c0 : nullptr};
  };
  for (int64_t c0 = 0; c0 < dim; c0 += hessian_gemm_block) {
    const int64_t c1 = std::min(dim, c0 + hessian_gemm_block);
    matmul_.gemm(CUBLAS_OP_N, CUBLAS_OP_T, dim - c0, c1 - c0, n_tokens, 1.0f, rows_from(c0), dim, rows_from(c0), dim,
                 0.0f, d_partial + c0 + c0 * dim, dim);
  }
}

double HessianPartial::flops(int64_t dim, int64_t n_tokens, matmul_precision precision) {
  const auto n = static_cast<double>(n_tokens);
  if (precision == matmul_precision::fp32) return n * static_cast<double>(dim) * static_cast<double>(dim);
  double f = 0.0;
  for (int64_t c0 = 0; c0 < dim; c0 += hessian_gemm_block)
    f += 2.0 * n * static_cast<double>(dim - c0) * static_cast<double>(std::min(dim, c0 + hessian_gemm_block) - c0);
  return (precision == matmul_precision::tf32x3 ? 3.0 : 1.0) * f;
}

HessianAccumulatorCuda::HessianAccumulatorCuda(int64_t dim, cudaStream_t stream, matmul_precision precision)
    : dim_(dim),
      own_stream_(stream ? unique_stream() : make_stream()),
      stream_(stream ? stream : own_stream_.get()),
      products_(stream_, precision),
      sums_(dim > 0 ? static_cast<std::size_t>(dim * (dim + 1) / 2) : 0),  // dim checked below
      partial_(dim > 0 ? static_cast<std::size_t>(dim * dim) : 0),
      flags_(1) {
  if (dim < 1) throw error(fmt::format("hessian (cuda): dimension {} must be positive", dim));
  sums_.zero();
  flags_.zero();
}

void HessianAccumulatorCuda::reset() {
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
  sums_.zero();
  flags_.zero();
  n_tokens_ = 0;
}

void HessianAccumulatorCuda::enqueue(const float* d_x, int64_t n_tokens) {
  if (n_tokens <= 0) return;
  products_.compute(d_x, n_tokens, dim_, partial_.get());
  hessian_fixed_point_add(partial_.get(), dim_, sums_.get(), flags_.get(), stream_);
  n_tokens_ += n_tokens;
}

void HessianAccumulatorCuda::add(const float* d_x, int64_t n_tokens) {
  enqueue(d_x, n_tokens);
  check();
}

void HessianAccumulatorCuda::add_host(const float* x, int64_t n_tokens) {
  if (n_tokens <= 0) return;
  const auto n = static_cast<std::size_t>(n_tokens * dim_);
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the previous upload may still be read
  if (staging_.size() < n) staging_ = DeviceBuffer<float>(n);
  staging_.upload(x, n);
  add(staging_.get(), n_tokens);
}

void HessianAccumulatorCuda::check() {
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
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
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
  static_assert(sizeof(hessian_int) == sizeof(cpu::hessian_int));
  const std::vector<hessian_int> sums = sums_.to_host();
  cpu::HessianAccumulator out(dim_);
  out.merge_packed(std::span<const cpu::hessian_int>(sums.data(), sums.size()), n_tokens_);
  return out;
}

void HessianAccumulatorCuda::upload(const cpu::HessianAccumulator& total) {
  if (total.dim() != dim_)
    throw error(fmt::format("hessian (cuda): upload of a dim {} accumulator into dim {}", total.dim(), dim_));
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
  const auto sums = total.packed_sums();
  sums_.upload(reinterpret_cast<const hessian_int*>(sums.data()), sums.size());
  n_tokens_ = total.n_tokens();
}

void HessianAccumulatorCuda::finalize(float* d_h) const {
  // The CPU's scale, computed once on the host: 2^-64 · 2/n in double.
  const double scale = n_tokens_ > 0 ? std::ldexp(2.0 / static_cast<double>(n_tokens_), -64) : 0.0;
  hessian_finalize(sums_.get(), dim_, scale, d_h, stream_);
}

}  // namespace shardq::cuda
