// Relative output error on the GPU, device half; see kernels/cuda/quant_error.hpp.
//   quant_error_diff_kernel, quant_error_dot_kernel
// CPU reference: kernels/cpu/quant_error.cpp. Test: shardq_gpu_tests --gtest_filter='QuantErrorCuda*'.
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/quant_error.hpp"

namespace shardq::cuda {
namespace {

constexpr int dot_threads = 256;

__global__ void quant_error_diff_kernel(const float* __restrict__ w, const float* __restrict__ wq, int64_t n,
                                        float* __restrict__ d) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) d[i] = __fsub_rn(w[i], wq[i]);
}

// Grid-stride sums per thread, then a shared-memory tree per block: the same grid and the
// same order every run, so the result is deterministic.
__global__ void quant_error_dot_kernel(const float* __restrict__ a, const float* __restrict__ ah, int64_t n,
                                       double* __restrict__ partials) {
  __shared__ double sum[dot_threads];
  double s = 0.0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    s = __dadd_rn(s, __dmul_rn(static_cast<double>(a[i]), static_cast<double>(ah[i])));
  sum[threadIdx.x] = s;
  __syncthreads();
  for (int half = dot_threads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) sum[threadIdx.x] += sum[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = sum[0];
}

}  // namespace

void quant_error_diff(const float* d_w, const float* d_wq, int64_t n, float* d_d, cudaStream_t stream) {
  if (n <= 0) return;
  quant_error_diff_kernel<<<grid_for(n, 256), 256, 0, stream>>>(d_w, d_wq, n, d_d);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

void quant_error_dot(const float* d_a, const float* d_ah, int64_t n, double* d_partials, cudaStream_t stream) {
  quant_error_dot_kernel<<<quant_error_blocks, dot_threads, 0, stream>>>(d_a, d_ah, n, d_partials);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

}  // namespace shardq::cuda
