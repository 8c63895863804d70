// Storage dtypes of model tensors and conversions to/from fp32.
//
// Conversions are bit exact: fp16 uses round-to-nearest-even (IEEE 754 binary16), bf16
// rounds to nearest even on the upper 16 bits of the fp32 pattern (as PyTorch does).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace shardq {

enum class dtype : uint8_t { f32, f16, bf16, i32, u32, i8, u8, i64 };

std::size_t dtype_size(dtype t);
std::string_view dtype_name(dtype t);  // safetensors spelling: "F32", "F16", "BF16", ...
// Parses the safetensors spelling; throws io_error naming `context` on an unknown dtype.
dtype dtype_from_name(std::string_view name, std::string_view context);

float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);
float bf16_to_fp32(uint16_t b);
uint16_t fp32_to_bf16(float f);
// Rounds through fp16 and back: the value an fp16 store will hold.
inline float round_to_fp16(float f) { return fp16_to_fp32(fp32_to_fp16(f)); }

// Converts `n` elements of `t` at `src` to fp32 in `dst` (f32, f16, bf16 only).
void convert_to_fp32(dtype t, const std::byte* src, float* dst, std::size_t n);
// Converts fp32 to `t` (f32, f16, bf16 only).
void convert_from_fp32(dtype t, const float* src, std::byte* dst, std::size_t n);

}  // namespace shardq
