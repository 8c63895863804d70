#include "common/dtype.hpp"

#include <bit>
#include <cmath>
#include <cstring>

#include "common/error.hpp"

namespace shardq {

std::size_t dtype_size(dtype t) {
  switch (t) {
    case dtype::f32: case dtype::i32: case dtype::u32: return 4;
    case dtype::f16: case dtype::bf16: return 2;
    case dtype::i8: case dtype::u8: return 1;
    case dtype::i64: return 8;
  }
  return 0;
}

std::string_view dtype_name(dtype t) {
  switch (t) {
    case dtype::f32: return "F32";
    case dtype::f16: return "F16";
    case dtype::bf16: return "BF16";
    case dtype::i32: return "I32";
    case dtype::u32: return "U32";
    case dtype::i8: return "I8";
    case dtype::u8: return "U8";
    case dtype::i64: return "I64";
  }
  return "?";
}

dtype dtype_from_name(std::string_view name, std::string_view context) {
  for (dtype t : {dtype::f32, dtype::f16, dtype::bf16, dtype::i32, dtype::u32, dtype::i8,
                  dtype::u8, dtype::i64}) {
    if (dtype_name(t) == name) return t;
  }
  throw io_error(fmt::format("{}: unsupported dtype '{}'", context, name));
}

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  return std::bit_cast<float>(bits);
}

uint16_t fp32_to_fp16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or nan
    return sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u);
  }
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: overflow to inf
  if (abs < 0x38800000u) {                         // below the smallest fp16 normal
    // Subnormal: value = abs_float / 2^-24, rounded to nearest even.
    const float a = std::bit_cast<float>(abs);
    const float scaled = a * 16777216.0f;  // exact: multiplying by a power of two
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));
  }
  uint32_t mant = abs & 0x7fffffu;
  uint32_t exp = (abs >> 23) - 127 + 15;
  uint32_t h = exp << 10 | mant >> 13;
  const uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // carries into the exponent correctly
  return sign | static_cast<uint16_t>(h);
}

float bf16_to_fp32(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

uint16_t fp32_to_bf16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet nan
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

void convert_to_fp32(dtype t, const std::byte* src, float* dst, std::size_t n) {
  switch (t) {
    case dtype::f32:
      if (n) std::memcpy(dst, src, n * 4);  // an empty tensor's pointers may be null (UB for memcpy)
      return;
    case dtype::f16:
      for (std::size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = fp16_to_fp32(h);
      }
      return;
    case dtype::bf16:
      for (std::size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_fp32(h);
      }
      return;
    default:
      throw io_error(fmt::format("cannot convert dtype {} to F32", dtype_name(t)));
  }
}

void convert_from_fp32(dtype t, const float* src, std::byte* dst, std::size_t n) {
  switch (t) {
    case dtype::f32:
      if (n) std::memcpy(dst, src, n * 4);  // an empty tensor's pointers may be null (UB for memcpy)
      return;
    case dtype::f16:
      for (std::size_t i = 0; i < n; ++i) {
        const uint16_t h = fp32_to_fp16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case dtype::bf16:
      for (std::size_t i = 0; i < n; ++i) {
        const uint16_t h = fp32_to_bf16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    default:
      throw io_error(fmt::format("cannot convert F32 to dtype {}", dtype_name(t)));
  }
}

}  // namespace shardq
