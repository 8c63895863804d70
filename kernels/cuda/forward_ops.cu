// Decoder forward kernels on the GPU; the API and the mapping of each kernel are in
// kernels/cuda/forward_ops.hpp.
//   rmsnorm_kernel, rope_rotate_half_kernel, attention_causal_kernel, swiglu_kernel, add_bias_kernel,
//   token_cosines_kernel
// CPU reference: kernels/cpu/forward_ops.cpp (and the double references kernels/ref/forward_ref.cpp).
// Test: shardq_gpu_tests --gtest_filter='*ForwardCuda*'.
#include <cmath>

#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/forward_ops.hpp"

namespace shardq::cuda {
namespace {

constexpr int norm_threads = 256;

__global__ void rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ weight, float* y, int64_t dim,
                               float eps) {
  __shared__ double partial[norm_threads];
  const float* xr = x + blockIdx.x * dim;
  float* yr = y + blockIdx.x * dim;
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += static_cast<double>(xr[i]) * xr[i];
  partial[threadIdx.x] = ss;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  const float inv = static_cast<float>(1.0 / sqrt(partial[0] / static_cast<double>(dim) + eps));
  // y may alias x: every thread has read its elements (and the reduction synchronised) by now.
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = __fmul_rn(__fmul_rn(xr[i], inv), weight[i]);
}

__global__ void rope_rotate_half_kernel(float* x, int64_t n_tokens, int n_heads, int head_dim,
                                        const int32_t* __restrict__ positions, float theta) {
  const int half = head_dim / 2;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t total = n_tokens * n_heads * half;
  if (idx >= total) return;
  const int i = static_cast<int>(idx % half);
  const int64_t th = idx / half;  // token * n_heads + head
  const int64_t t = th / n_heads;
  const float inv_freq = 1.0f / powf(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
  const float angle = static_cast<float>(positions[t]) * inv_freq;
  const float c = cosf(angle), s = sinf(angle);
  float* v = x + th * head_dim;
  const float a = v[i], b = v[i + half];
  v[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
  v[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
}

constexpr int attention_warps = 4;
constexpr int attention_regs = attention_max_head_dim / 32;

__global__ void attention_causal_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                        const float* __restrict__ v, float* __restrict__ out, int seq_len,
                                        int n_heads, int n_kv_heads, int head_dim, float scale) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * attention_warps + threadIdx.x / 32;  // query position in the window
  if (row >= seq_len) return;
  const int h = blockIdx.y;
  const int g = h / (n_heads / n_kv_heads);
  const int64_t base = static_cast<int64_t>(blockIdx.z) * seq_len;
  const int64_t q_row = static_cast<int64_t>(n_heads) * head_dim, kv_row = static_cast<int64_t>(n_kv_heads) * head_dim;
  const float* qh = q + (base + row) * q_row + static_cast<int64_t>(h) * head_dim;
  float qr[attention_regs], acc[attention_regs];
  for (int r = 0; r < attention_regs; ++r) {
    const int d = lane + 32 * r;
    qr[r] = d < head_dim ? qh[d] : 0.0f;
    acc[r] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int t = 0; t <= row; ++t) {
    const float* kt = k + (base + t) * kv_row + static_cast<int64_t>(g) * head_dim;
    const float* vt = v + (base + t) * kv_row + static_cast<int64_t>(g) * head_dim;
    float dot = 0.0f;
    for (int r = 0; r < attention_regs; ++r) {
      const int d = lane + 32 * r;
      if (d < head_dim) dot += qr[r] * kt[d];
    }
    for (int off = 16; off > 0; off /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    const float s = dot * scale;
    const float m_new = fmaxf(m, s);
    const float correction = expf(m - m_new);
    const float p = expf(s - m_new);
    l = l * correction + p;
    for (int r = 0; r < attention_regs; ++r) {
      const int d = lane + 32 * r;
      if (d < head_dim) acc[r] = acc[r] * correction + p * vt[d];
    }
    m = m_new;
  }
  float* oh = out + (base + row) * q_row + static_cast<int64_t>(h) * head_dim;
  const float inv_l = 1.0f / l;
  for (int r = 0; r < attention_regs; ++r) {
    const int d = lane + 32 * r;
    if (d < head_dim) oh[d] = acc[r] * inv_l;
  }
}

__global__ void swiglu_kernel(const float* gate, const float* up, float* out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  out[i] = __fmul_rn(g / (1.0f + expf(-g)), up[i]);
}

__global__ void add_bias_kernel(float* y, const float* __restrict__ bias, int64_t n_tokens, int64_t dim) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_tokens * dim) return;
  y[i] += bias[i % dim];
}

__global__ void token_cosines_kernel(const float* __restrict__ a, const float* __restrict__ b, int64_t dim,
                                     double* __restrict__ cos) {
  __shared__ double partial[3][norm_threads];
  const float* x = a + blockIdx.x * dim;
  const float* y = b + blockIdx.x * dim;
  double dot = 0.0, nx = 0.0, ny = 0.0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    dot += static_cast<double>(x[i]) * y[i];
    nx += static_cast<double>(x[i]) * x[i];
    ny += static_cast<double>(y[i]) * y[i];
  }
  partial[0][threadIdx.x] = dot;
  partial[1][threadIdx.x] = nx;
  partial[2][threadIdx.x] = ny;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) {
      for (int k = 0; k < 3; ++k) partial[k][threadIdx.x] += partial[k][threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const double d = partial[0][0], p = partial[1][0], q = partial[2][0];
    cos[blockIdx.x] = (p > 0 && q > 0) ? fmin(1.0, fmax(-1.0, d / sqrt(p * q))) : 0.0;
  }
}

}  // namespace

void rmsnorm(const float* d_x, const float* d_weight, float* d_y, int64_t n_tokens, int64_t dim, float eps,
             cudaStream_t stream) {
  if (n_tokens <= 0) return;
  rmsnorm_kernel<<<static_cast<unsigned>(n_tokens), norm_threads, 0, stream>>>(d_x, d_weight, d_y, dim, eps);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

void rope_rotate_half(float* d_x, int64_t n_tokens, int n_heads, int head_dim, const int32_t* d_positions,
                      float theta, cudaStream_t stream) {
  const int64_t total = n_tokens * n_heads * (head_dim / 2);
  if (total <= 0) return;
  rope_rotate_half_kernel<<<grid_for(total, 256), 256, 0, stream>>>(d_x, n_tokens, n_heads, head_dim, d_positions,
                                                                    theta);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

void attention_causal(const float* d_q, const float* d_k, const float* d_v, float* d_out, int n_seq, int seq_len,
                      int n_heads, int n_kv_heads, int head_dim, cudaStream_t stream) {
  if (head_dim > attention_max_head_dim || head_dim < 1)
    detail::throw_message("attention_causal (cuda): head_dim must be in [1, 256]", __FILE__, __LINE__);
  if (n_kv_heads < 1 || n_heads % n_kv_heads != 0)
    detail::throw_message("attention_causal (cuda): n_heads must be a multiple of n_kv_heads", __FILE__, __LINE__);
  if (n_seq <= 0 || seq_len <= 0) return;
  const dim3 grid(grid_for(seq_len, attention_warps), static_cast<unsigned>(n_heads), static_cast<unsigned>(n_seq));
  const float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  attention_causal_kernel<<<grid, attention_warps * 32, 0, stream>>>(d_q, d_k, d_v, d_out, seq_len, n_heads,
                                                                     n_kv_heads, head_dim, scale);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

void swiglu(const float* d_gate, const float* d_up, float* d_out, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  swiglu_kernel<<<grid_for(n, 256), 256, 0, stream>>>(d_gate, d_up, d_out, n);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

void add_bias(float* d_y, const float* d_bias, int64_t n_tokens, int64_t dim, cudaStream_t stream) {
  if (n_tokens * dim <= 0) return;
  add_bias_kernel<<<grid_for(n_tokens * dim, 256), 256, 0, stream>>>(d_y, d_bias, n_tokens, dim);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

void token_cosines(const float* d_a, const float* d_b, int64_t n_tokens, int64_t dim, double* d_cos,
                   cudaStream_t stream) {
  if (n_tokens <= 0) return;
  token_cosines_kernel<<<static_cast<unsigned>(n_tokens), norm_threads, 0, stream>>>(d_a, d_b, dim, d_cos);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

}  // namespace shardq::cuda
