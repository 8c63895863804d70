// NF4 on the GPU; see kernels/cuda/nf4.hpp.
//   nf4_codes_kernel (one thread per (row, block of 64 columns))
//   nf4_dequantize_kernel (one thread per weight)
// CPU reference: kernels/cpu/nf4.cpp, kernels/quantize.cpp (dequantize).
// Test: shardq_gpu_tests --gtest_filter='Nf4Cuda*'.
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/grid.cuh"
#include "kernels/cuda/nf4.hpp"

namespace shardq::cuda {
namespace {

// The host table itself (kernels/quant_types.hpp), not a copy of its digits.
__constant__ float nf4_levels_device[16] = {
    nf4_levels[0], nf4_levels[1], nf4_levels[2],  nf4_levels[3],  nf4_levels[4],  nf4_levels[5],
    nf4_levels[6], nf4_levels[7], nf4_levels[8],  nf4_levels[9],  nf4_levels[10], nf4_levels[11],
    nf4_levels[12], nf4_levels[13], nf4_levels[14], nf4_levels[15]};
static_assert(nf4_levels.size() == 16 && nf4_levels[7] == 0.0f, "code 7 is the level 0.0 of an all-zero block");

// cpu::nf4_code: midpoints formed and compared in double (exact), ties to the lower level.
__device__ inline unsigned char nf4_code(float x) {
  unsigned char code = 0;
  for (int k = 1; k < 16; ++k) {
    const double mid = 0.5 * (static_cast<double>(nf4_levels_device[k - 1]) + nf4_levels_device[k]);
    if (x > mid) code = static_cast<unsigned char>(k);
  }
  return code;
}

// cpu::nf4_quantize for one block: fabsf/fmaxf/fminf are std::fabs/max/min on the finite
// inputs, __fdiv_rn the IEEE quotient whatever nvcc's -prec-div says.
__global__ void nf4_codes_kernel(const float* __restrict__ w, int64_t rows, int64_t cols, int64_t n_blocks,
                                 uint8_t* __restrict__ codes, uint16_t* __restrict__ scales) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * n_blocks) return;
  const int64_t r = idx / n_blocks, g = idx % n_blocks;
  const int64_t c0 = g * nf4_block_size, c1 = min(cols, c0 + static_cast<int64_t>(nf4_block_size));
  const float* row = w + r * cols;
  float absmax = 0.0f;
  for (int64_t c = c0; c < c1; ++c) absmax = fmaxf(absmax, fabsf(row[c]));
  const unsigned short h = fp16_bits(fminf(absmax, 65504.0f));
  const float scale = __half2float(__ushort_as_half(h));
  for (int64_t c = c0; c < c1; ++c)
    codes[r * cols + c] = scale > 0.0f ? nf4_code(fminf(fmaxf(__fdiv_rn(row[c], scale), -1.0f), 1.0f)) : 7;
  scales[idx] = h;
}

// dequantize(): one fp32 rounding (the product); fp16 → fp32 is exact.
__global__ void nf4_dequantize_kernel(const uint8_t* __restrict__ codes, const uint16_t* __restrict__ scales,
                                      int64_t rows, int64_t cols, int64_t n_blocks, float* __restrict__ wq) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * cols) return;
  const int64_t r = idx / cols, c = idx % cols;
  const float scale = __half2float(__ushort_as_half(scales[r * n_blocks + c / nf4_block_size]));
  wq[idx] = __fmul_rn(scale, nf4_levels_device[codes[idx] & 15u]);  // a 4-bit code: the mask only bounds the read
}

}  // namespace

void nf4_codes(const float* d_w, int64_t rows, int64_t cols, uint8_t* d_codes, uint16_t* d_scales,
               cudaStream_t stream) {
  const int64_t n_blocks = (cols + nf4_block_size - 1) / nf4_block_size;
  if (rows <= 0 || cols <= 0) return;
  nf4_codes_kernel<<<grid_for(rows * n_blocks, 128), 128, 0, stream>>>(d_w, rows, cols, n_blocks, d_codes, d_scales);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

void nf4_dequantize_device(const uint8_t* d_codes, const uint16_t* d_scales, int64_t rows, int64_t cols, float* d_wq,
                           cudaStream_t stream) {
  const int64_t n_blocks = (cols + nf4_block_size - 1) / nf4_block_size;
  if (rows <= 0 || cols <= 0) return;
  nf4_dequantize_kernel<<<grid_for(rows * cols, 256), 256, 0, stream>>>(d_codes, d_scales, rows, cols, n_blocks, d_wq);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

}  // namespace shardq::cuda
