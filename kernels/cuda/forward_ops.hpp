// The element-wise and attention kernels of the Llama-family decoder on the GPU (fp32), on
// device pointers, each mirroring the CPU tier kernel of the same name in
// kernels/cpu/forward_ops.hpp (same shapes, same row-major layouts, same conventions):
//   rmsnorm          one block per token row; the mean square is reduced in double as on the CPU
//   rope_rotate_half one thread per (token, head, pair); the CPU tier's inverse frequencies
//                    (cpu::rope_inv_freq), products rounded separately (no FMA), as the CPU
//                    code computes them
//   attention_causal flash-attention tiles (Dao et al. 2022) in fp32 on the CUDA cores: a block
//                    per 64 query rows of one (window, head) walks the 64-key tiles up to the
//                    diagonal with an online softmax, K/V tiles staged in shared memory;
//                    head_dim ≤ 256 (zero-padded to 64, 128 or 256)
//   attention_causal_rowwise one warp per (window, head, query row), one key at a time (online
//                    softmax, Milakov & Gimelshein 2018): the simple reference the tests and
//                    bench_gpu_attention hold the tiled kernel to, and its fallback
//   swiglu, add_bias element-wise
//   token_cosines    one block per token row, double reductions (LIM's cosine per token)
// The linears and the layer are kernels/cuda/forward.hpp (cuBLAS sgemm).
// Test: shardq_gpu_tests --gtest_filter='*ForwardCuda*:*AttentionCuda*'; benchmark: bench_gpu_attention.
// Launches are asynchronous on `stream`.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace shardq::cuda {

void rmsnorm(const float* d_x, const float* d_weight, float* d_y, int64_t n_tokens, int64_t dim, float eps,
             cudaStream_t stream);
void rope_rotate_half(float* d_x, int64_t n_tokens, int n_heads, int head_dim, const int32_t* d_positions,
                      float theta, cudaStream_t stream);
// Same contract as cpu::attention_causal. Throws shardq::cuda_error when head_dim is outside
// [1, 256] or n_heads is not a positive multiple of n_kv_heads. Runs the rowwise kernel where
// the device cannot give the tiled one its shared memory (attention_tiled_available).
void attention_causal(const float* d_q, const float* d_k, const float* d_v, float* d_out, int n_seq, int seq_len,
                      int n_heads, int n_kv_heads, int head_dim, cudaStream_t stream);
void attention_causal_rowwise(const float* d_q, const float* d_k, const float* d_v, float* d_out, int n_seq,
                              int seq_len, int n_heads, int n_kv_heads, int head_dim, cudaStream_t stream);
// Whether the current device runs attention_causal's tiled kernel at this head_dim (shared
// memory per block: 51 KiB for head_dim ≤ 64, 83 KiB ≤ 128, 147 KiB ≤ 256).
bool attention_tiled_available(int head_dim);
void swiglu(const float* d_gate, const float* d_up, float* d_out, int64_t n, cudaStream_t stream);
void add_bias(float* d_y, const float* d_bias, int64_t n_tokens, int64_t dim, cudaStream_t stream);
// d_cos[t] = cos∠(a[t,:], b[t,:]) as cpu::token_cosines (double; the summation order differs).
void token_cosines(const float* d_a, const float* d_b, int64_t n_tokens, int64_t dim, double* d_cos,
                   cudaStream_t stream);

inline constexpr int attention_max_head_dim = 256;

}  // namespace shardq::cuda
