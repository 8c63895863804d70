// The element-wise and attention kernels of the Llama-family decoder on the GPU (fp32), on
// device pointers, each mirroring the CPU tier kernel of the same name in
// kernels/cpu/forward_ops.hpp (same shapes, same row-major layouts, same conventions):
//   rmsnorm          one block per token row; the mean square is reduced in double as on the CPU
//   rope_rotate_half one thread per (token, head, pair); products rounded separately (no FMA),
//                    as the CPU code computes them
//   attention_causal one warp per (window, head, query row), online softmax over the visible
//                    keys (Milakov & Gimelshein 2018), head_dim ≤ 256; a simple correct kernel,
//                    not a flash-attention one
//   swiglu, add_bias element-wise
//   token_cosines    one block per token row, double reductions (LIM's cosine per token)
// The linears and the layer are kernels/cuda/forward.hpp (cuBLAS sgemm).
// Test: shardq_gpu_tests --gtest_filter='*ForwardCuda*'. Launches are asynchronous on `stream`.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace shardq::cuda {

void rmsnorm(const float* d_x, const float* d_weight, float* d_y, int64_t n_tokens, int64_t dim, float eps,
             cudaStream_t stream);
void rope_rotate_half(float* d_x, int64_t n_tokens, int n_heads, int head_dim, const int32_t* d_positions,
                      float theta, cudaStream_t stream);
// Throws shardq::cuda_error when head_dim > 256 or n_heads is not a multiple of n_kv_heads.
void attention_causal(const float* d_q, const float* d_k, const float* d_v, float* d_out, int n_seq, int seq_len,
                      int n_heads, int n_kv_heads, int head_dim, cudaStream_t stream);
void swiglu(const float* d_gate, const float* d_up, float* d_out, int64_t n, cudaStream_t stream);
void add_bias(float* d_y, const float* d_bias, int64_t n_tokens, int64_t dim, cudaStream_t stream);
// d_cos[t] = cos∠(a[t,:], b[t,:]) as cpu::token_cosines (double; the summation order differs).
void token_cosines(const float* d_a, const float* d_b, int64_t n_tokens, int64_t dim, double* d_cos,
                   cudaStream_t stream);

inline constexpr int attention_max_head_dim = 256;

}  // namespace shardq::cuda
