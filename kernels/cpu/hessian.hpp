// GPTQ's layer Hessian H = 2/n · Σ_t x_t x_tᵀ of one linear's input, accumulated over
// calibration micro-batches (GPTQ, Frantar et al. 2022, eq. 1: the Hessian of ‖WX − ŴX‖²).
// CPU tier; the reference is kernels/ref/hessian_ref.cpp; tests:
// `shardq_unit_tests --gtest_filter='Hessian*'`; benchmark: bench_forward.
//
// Determinism across ranks. The running sum is kept as fixed-point integers, so it is an exact,
// associative and commutative sum: each micro-batch's fp32 partial P = XᵀX (one ssyrk) is
// converted element by element to a signed __int128 holding P·2^64 truncated toward zero
// (values below 2^-64 in magnitude become 0), and partials are added as integers (overflow past
// 2^127, i.e. a sum above 2^63, is detected and thrown). Hence H does
// not depend on the order in which micro-batches are added nor on how they are grouped into
// accumulators before merge() (any rank count, any reduction tree). It does depend on the
// micro-batch boundaries themselves (each fp32 partial is rounded), so callers that want
// rank-count independence cut the calibration set into the same micro-batches on every run;
// with OpenBLAS the partial of a given block of rows is reproducible on one machine.
// (An exact per-token scheme — truncating every product x_i·x_j separately — would remove even
// that dependence but costs dim² integer operations per token instead of one sgemm-speed ssyrk.)
//
// Only the upper triangle is stored (packed row by row): dim·(dim+1)/2 integers of 16 bytes.
// finalize() converts each sum to double (correctly rounded), scales it by 2^-64 · 2/n, and
// returns the full symmetric fp32 matrix.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/tensor.hpp"

namespace shardq::cpu {

// The fixed-point integer of the accumulator (the GCC/Clang 128-bit extension; comm/'s exact
// allreduce_sum takes the same type).
__extension__ typedef __int128 hessian_int;

class HessianAccumulator {
 public:
  HessianAccumulator() = default;
  explicit HessianAccumulator(int64_t dim);

  int64_t dim() const { return dim_; }
  int64_t n_tokens() const { return n_tokens_; }

  // Adds Σ xxᵀ over the rows of x [n_tokens, dim] (one micro-batch). Throws shardq::error on
  // a non-finite entry or a sum beyond the fixed-point range (2^63).
  void add(const float* x, int64_t n_tokens);
  // Adds another accumulator of the same dim (reductions across ranks); exact.
  void merge(const HessianAccumulator& other);
  // The packed upper-triangle sums (entry (i, j), j ≥ i, at i*dim - i*(i-1)/2 + (j - i)),
  // and the inverse for a reduction over a byte transport: adds `sums` (same layout) and
  // `n_tokens` to this accumulator.
  std::span<const hessian_int> packed_sums() const { return sums_; }
  void merge_packed(std::span<const hessian_int> sums, int64_t n_tokens);

  // H = 2/n_tokens · Σ xxᵀ as a full symmetric [dim, dim] fp32 tensor (zero when empty).
  Tensor finalize() const;

 private:
  int64_t dim_ = 0;
  int64_t n_tokens_ = 0;
  std::vector<hessian_int> sums_;
  std::vector<float> partial_;  // [dim, dim] ssyrk scratch, upper triangle used
};

// Fixed-point conversion used by the accumulator: trunc(p · 2^64) as an integer.
hessian_int hessian_fixed_point(float p);

}  // namespace shardq::cpu
