// Host CUDA emulator (tests/cuda_emu): __half and the conversions shardq's kernels use, on the
// host compiler's _Float16 (IEEE binary16, conversions rounded to nearest even as
// __float2half_rn).
#pragma once

#include <cstring>

#include "shardq_cuda_emu/device.hpp"

struct __half {
  unsigned short bits;
};

inline __half __float2half_rn(float x) {
  const _Float16 h = static_cast<_Float16>(x);
  __half out;
  std::memcpy(&out.bits, &h, sizeof out.bits);
  return out;
}
inline float __half2float(__half h) {
  _Float16 v;
  std::memcpy(&v, &h.bits, sizeof v);
  return static_cast<float>(v);
}
inline unsigned short __half_as_ushort(__half h) { return h.bits; }
inline __half __ushort_as_half(unsigned short bits) { return __half{bits}; }
