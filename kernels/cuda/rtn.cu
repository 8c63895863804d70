// RTN on the GPU; see kernels/cuda/rtn.hpp.
//   rtn_codes_kernel (one thread per (row, group))
// CPU reference: kernels/cpu/rtn.cpp. Test: shardq_gpu_tests --gtest_filter='*RtnCuda*'.
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/grid.cuh"
#include "kernels/cuda/rtn.hpp"

namespace shardq::cuda {
namespace {

__global__ void rtn_codes_kernel(const float* __restrict__ w, int64_t rows, int64_t cols, int64_t group_cols,
                                 int64_t n_groups, float maxq, bool sym, uint8_t* __restrict__ codes,
                                 uint16_t* __restrict__ scales, uint8_t* __restrict__ zeros) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * n_groups) return;
  const int64_t r = idx / n_groups, g = idx % n_groups;
  const int64_t c0 = g * group_cols, c1 = min(cols, c0 + group_cols);
  const float* row = w + r * cols;
  float mn = row[c0], mx = row[c0];
  for (int64_t c = c0 + 1; c < c1; ++c) {
    mn = fminf(mn, row[c]);
    mx = fmaxf(mx, row[c]);
  }
  const DeviceGrid p = grid_find_params(mn, mx, maxq, sym);
  for (int64_t c = c0; c < c1; ++c) codes[r * cols + c] = static_cast<uint8_t>(grid_quantize(row[c], p.scale, p.zero, maxq));
  scales[idx] = fp16_bits(p.scale);
  zeros[idx] = static_cast<uint8_t>(p.zero);
}

}  // namespace

void rtn_codes(const float* d_w, int64_t rows, int64_t cols, int64_t group_cols, int bits, bool sym,
               uint8_t* d_codes, uint16_t* d_scales, uint8_t* d_zeros, cudaStream_t stream) {
  const int64_t n_groups = (cols + group_cols - 1) / group_cols;
  if (rows * n_groups <= 0) return;
  const float maxq = static_cast<float>((1 << bits) - 1);
  rtn_codes_kernel<<<grid_for(rows * n_groups, 128), 128, 0, stream>>>(d_w, rows, cols, group_cols, n_groups, maxq,
                                                                       sym, d_codes, d_scales, d_zeros);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

}  // namespace shardq::cuda
