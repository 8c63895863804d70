// Device copies of the uniform integer grid of kernels/cpu/rtn.hpp (the reference GPTQ
// Quantizer), operation for operation, so the GPU tiers (rtn.cu, gptq.cu) choose the same
// fp16 scales, zeros and codes as the CPU tier. Products and quotients are rounded explicitly
// (__fmul_rn, __fdiv_rn) where the CPU code rounds them, so neither nvcc's FMA contraction nor
// a fast-math build (approximate division) can change a result.
#pragma once

#include <cuda_fp16.h>

namespace shardq::cuda {

struct DeviceGrid {
  float scale;  // an fp16 value
  float zero;   // an integer in [0, maxq]
};

// cpu::scale_to_fp16_up: the nearest fp16 at or above raw, clamped to [2^-24, 65504].
__device__ inline float scale_to_fp16_up(float raw) {
  raw = fminf(fmaxf(raw, 5.9604644775390625e-08f), 65504.0f);
  unsigned short h = __half_as_ushort(__float2half_rn(raw));
  if (__half2float(__ushort_as_half(h)) < raw) ++h;
  return __half2float(__ushort_as_half(h));
}

// cpu::grid_find_params.
__device__ inline DeviceGrid grid_find_params(float xmin, float xmax, float maxq, bool sym) {
  xmin = fminf(xmin, 0.0f);
  xmax = fmaxf(xmax, 0.0f);
  if (sym) {
    const float m = fmaxf(-xmin, xmax);
    xmin = -m;
    xmax = m;
  }
  if (xmin == xmax) {
    xmin = -1.0f;
    xmax = 1.0f;
  }
  DeviceGrid g;
  g.scale = scale_to_fp16_up(__fdiv_rn(xmax - xmin, maxq));
  g.zero = sym ? floorf(__fdiv_rn(maxq + 1.0f, 2.0f)) : fminf(fmaxf(rintf(__fdiv_rn(-xmin, g.scale)), 0.0f), maxq);
  return g;
}

// cpu::grid_quantize / grid_dequantize (rintf: round half to even, as std::nearbyint).
__device__ inline float grid_quantize(float w, float scale, float zero, float maxq) {
  return fminf(fmaxf(rintf(__fdiv_rn(w, scale)) + zero, 0.0f), maxq);
}
__device__ inline float grid_dequantize(float code, float scale, float zero) { return __fmul_rn(scale, code - zero); }

__device__ inline unsigned short fp16_bits(float v) { return __half_as_ushort(__float2half_rn(v)); }

}  // namespace shardq::cuda
