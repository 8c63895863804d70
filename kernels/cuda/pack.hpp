// Bit packing of quantization codes into qweight rows on the GPU (layout:
// kernels/quant_types.hpp; CPU tier kernels/cpu/pack.hpp).
//   pack_codes_kernel: one thread per output word, gathering the (at most 33/bits + 1) codes
//   whose bits fall into it, so 3-bit codes straddling two words need no atomics.
// Test: shardq_gpu_tests --gtest_filter='*PackCuda*'.
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

namespace shardq::cuda {

// d_codes [rows, cols] row-major (each < 2^bits; higher bits are ignored) →
// d_qweight [rows, ceil(cols*bits/32)]. bits 2, 3, 4 or 8.
void pack_codes(const uint8_t* d_codes, int64_t rows, int64_t cols, int bits, uint32_t* d_qweight,
                cudaStream_t stream);

// Host convenience: upload, pack, download. Throws shardq::cuda_error on a code out of range
// or bits not in {2, 3, 4, 8} (as cpu::pack_codes throws shardq::error).
std::vector<uint32_t> pack_codes_host(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols, int bits);

}  // namespace shardq::cuda
