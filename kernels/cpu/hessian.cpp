// Exact fixed-point accumulation of the GPTQ Hessian; see hessian.hpp.
#include "kernels/cpu/hessian.hpp"

#include <cmath>
#include <cstring>
#include <string>

#include "common/error.hpp"
#include "kernels/cpu/blas.hpp"

namespace shardq::cpu {

hessian_int hessian_fixed_point(float p) {
  uint32_t bits = 0;
  std::memcpy(&bits, &p, sizeof bits);
  const int exponent = static_cast<int>((bits >> 23) & 0xffu);
  if (exponent == 0xff) throw error("hessian accumulation: non-finite activation product (inf or nan in the layer input)");
  if (exponent == 0) return 0;  // zero or subnormal: below 2^-126, far under the 2^-64 grid
  const uint64_t mantissa = (bits & 0x7fffffu) | 0x800000u;
  // p = mantissa · 2^(exponent-150); p·2^64 = mantissa · 2^shift.
  const int shift = exponent - 150 + 64;
  hessian_int magnitude = 0;
  if (shift >= 0) {
    // mantissa < 2^24: shift ≤ 102 keeps the integer below 2^126, i.e. |p| < 2^62.
    if (shift > 102) throw error(fmt::format("hessian accumulation: partial sum {} exceeds the fixed-point range (2^62)", p));
    magnitude = static_cast<hessian_int>(mantissa) << shift;
  } else if (shift > -24) {
    magnitude = static_cast<hessian_int>(mantissa >> -shift);
  }
  return (bits >> 31) ? -magnitude : magnitude;
}

namespace {

[[noreturn]] void throw_overflow() {
  throw error("hessian accumulation: the fixed-point sum exceeds 2^63 (activations too large to accumulate exactly)");
}

}  // namespace

HessianAccumulator::HessianAccumulator(int64_t dim) : dim_(dim), sums_(dim * (dim + 1) / 2, 0) {}

void HessianAccumulator::add(const float* x, int64_t n_tokens) {
  if (n_tokens <= 0) return;
  partial_.resize(static_cast<size_t>(dim_ * dim_));
  syrk_upper_tn(dim_, n_tokens, x, partial_.data(), 1.0f, 0.0f);
  hessian_int* out = sums_.data();
  for (int64_t i = 0; i < dim_; ++i) {
    const float* row = partial_.data() + i * dim_;
    for (int64_t j = i; j < dim_; ++j, ++out)
      if (__builtin_add_overflow(*out, hessian_fixed_point(row[j]), out)) throw_overflow();
  }
  n_tokens_ += n_tokens;
}

void HessianAccumulator::merge_packed(std::span<const hessian_int> sums, int64_t n_tokens) {
  if (sums.size() != sums_.size())
    throw error(fmt::format("hessian merge: {} packed sums do not match dim {} ({} expected)", sums.size(), dim_,
                            sums_.size()));
  for (size_t i = 0; i < sums_.size(); ++i)
    if (__builtin_add_overflow(sums_[i], sums[i], &sums_[i])) throw_overflow();
  n_tokens_ += n_tokens;
}

void HessianAccumulator::merge(const HessianAccumulator& other) { merge_packed(other.sums_, other.n_tokens_); }

Tensor HessianAccumulator::finalize() const {
  Tensor h({dim_, dim_});
  if (n_tokens_ == 0) return h;
  const double scale = std::ldexp(2.0 / static_cast<double>(n_tokens_), -64);
  const hessian_int* in = sums_.data();
  for (int64_t i = 0; i < dim_; ++i) {
    for (int64_t j = i; j < dim_; ++j) {
      const float value = static_cast<float>(static_cast<double>(*in++) * scale);
      h.data[i * dim_ + j] = value;
      h.data[j * dim_ + i] = value;
    }
  }
  return h;
}

}  // namespace shardq::cpu
