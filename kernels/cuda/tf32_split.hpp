// The 3xTF32 split of an fp32 value, x ≈ big + small with both halves TF32 numbers, shared by
// the device kernel (kernels/cuda/matmul.cu) and the host (its test reference). TF32 keeps
// fp32's sign, its 8-bit exponent and the top 10 of its 23 mantissa bits: a TF32 number is an
// fp32 encoding whose 13 low bits are zero, so the product of two of them (≤ 22 significant
// bits) is exact in fp32, and a tensor-core product of pre-rounded operands rounds nothing
// before the fp32 accumulation. With big = tf32(x) and small = tf32(x − big) (x − big is exact
// in fp32: |x − big| ≤ 2^-11·2^e and a multiple of x's ulp), A·B = Ab·Bb + Ab·Bs + As·Bb + As·Bs
// and the dropped As·Bs is below 2^-22 of |A||B|: near-fp32 products from three TF32 ones
// (Ootomo & Yokota 2022, "Recovering single precision accuracy from Tensor Cores while
// surpassing the FP32 theoretical peak performance"; CUTLASS's 3xTF32 GEMM).
// No CUDA header: the CPU unit tests include it too.
// Test: shardq_unit_tests --gtest_filter='Tf32Split*' (host), shardq_gpu_tests
// --gtest_filter='*MatmulCuda*' (device kernel bit for bit, products per precision).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SHARDQ_HOST_DEVICE __host__ __device__
#else
#define SHARDQ_HOST_DEVICE
#endif

namespace shardq::cuda {

// The TF32 number nearest x, ties away from zero (PTX cvt.rna.tf32.f32): half of the 13 low
// bits' weight added to the magnitude, then those bits cleared (a carry into the exponent is
// the correct rounding up). inf and nan pass unchanged; a finite x that would round past the
// largest TF32 number is truncated instead, so a finite input stays finite.
SHARDQ_HOST_DEVICE inline float round_to_tf32(float x) {
  constexpr uint32_t exponent_mask = 0x7f800000u, low_bits = 0x1fffu;
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & exponent_mask) == exponent_mask) return x;
  uint32_t r = (u + 0x1000u) & ~low_bits;
  if ((r & exponent_mask) == exponent_mask) r = u & ~low_bits;
  float y;
  std::memcpy(&y, &r, sizeof y);
  return y;
}

struct Tf32Pair {
  float big;
  float small;
};

// small is 0 for inf and nan (big carries them), so a non-finite operand gives what one fp32
// product gives, not a nan from inf − inf.
SHARDQ_HOST_DEVICE inline Tf32Pair tf32_split(float x) {
  const float big = round_to_tf32(x);
  const float rest = x - big;
  return {big, rest - rest == 0.0f ? round_to_tf32(rest) : 0.0f};  // rest − rest: 0 unless inf or nan
}

}  // namespace shardq::cuda
