// The tf32x3 operand split on the GPU; see kernels/cuda/matmul.hpp.
//   tf32_split_kernel: one thread per value, tf32_split of kernels/cuda/tf32_split.hpp.
// CPU reference: the same inline function on the host (tests/unit/test_tf32_split.cpp holds it
// to a slow definition). Test: shardq_gpu_tests --gtest_filter='*MatmulCuda*'.
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/matmul.hpp"
#include "kernels/cuda/tf32_split.hpp"

namespace shardq::cuda {
namespace {

__global__ void tf32_split_kernel(const float* __restrict__ x, int64_t n, float* __restrict__ big,
                                  float* __restrict__ small) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const Tf32Pair p = tf32_split(x[i]);
  big[i] = p.big;
  small[i] = p.small;
}

}  // namespace

void tf32_split(const float* d_x, int64_t n, float* d_big, float* d_small, cudaStream_t stream) {
  if (n <= 0) return;
  tf32_split_kernel<<<grid_for(n, 256), 256, 0, stream>>>(d_x, n, d_big, d_small);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

}  // namespace shardq::cuda
