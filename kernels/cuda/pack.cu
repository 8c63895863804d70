// Code packing on the GPU; see kernels/cuda/pack.hpp.
//   pack_codes_kernel (one thread per qweight word)
// CPU reference: kernels/cpu/pack.cpp (pack_row). Test: shardq_gpu_tests --gtest_filter='*PackCuda*'.
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/pack.hpp"

namespace shardq::cuda {
namespace {

__global__ void pack_codes_kernel(const uint8_t* __restrict__ codes, int64_t rows, int64_t cols, int bits,
                                  int64_t words_per_row, uint32_t* __restrict__ qweight) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * words_per_row) return;
  const int64_t r = idx / words_per_row, w = idx % words_per_row;
  const uint32_t mask = (1u << bits) - 1u;
  const int64_t bit0 = w * 32;
  const int64_t c_end = min(cols, (bit0 + 31) / bits + 1);
  uint32_t word = 0;
  for (int64_t c = bit0 / bits; c < c_end; ++c) {
    const uint32_t code = codes[r * cols + c] & mask;
    const int64_t shift = c * bits - bit0;  // in (-bits, 32): negative for a code begun in the previous word
    word |= shift >= 0 ? code << shift : code >> -shift;
  }
  qweight[idx] = word;
}

}  // namespace

void pack_codes(const uint8_t* d_codes, int64_t rows, int64_t cols, int bits, uint32_t* d_qweight,
                cudaStream_t stream) {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
    detail::throw_message("pack (cuda): code width must be 2, 3, 4 or 8 bits", __FILE__, __LINE__);
  const int64_t wpr = (cols * bits + 31) / 32;
  if (rows * wpr <= 0) return;
  pack_codes_kernel<<<grid_for(rows * wpr, 256), 256, 0, stream>>>(d_codes, rows, cols, bits, wpr, d_qweight);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

std::vector<uint32_t> pack_codes_host(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols, int bits) {
  if (static_cast<int64_t>(codes.size()) != rows * cols)
    detail::throw_message("pack (cuda): the code count does not match rows * cols", __FILE__, __LINE__);
  for (const uint8_t c : codes)
    if (bits < 8 && c >= (1u << bits)) detail::throw_message("pack (cuda): a code does not fit in the bit width", __FILE__, __LINE__);
  DeviceBuffer<uint8_t> d_codes = to_device(codes);
  DeviceBuffer<uint32_t> d_q(static_cast<std::size_t>(rows * ((cols * bits + 31) / 32)));
  pack_codes(d_codes.get(), rows, cols, bits, d_q.get(), nullptr);
  SHARDQ_CUDA_CHECK(cudaDeviceSynchronize());
  return d_q.to_host();
}

}  // namespace shardq::cuda
