// The element-wise and attention kernels of the Llama-family decoder, CPU tier (fp32):
// RMSNorm, RoPE (HF rotate-half), causal GQA attention over token windows, SwiGLU.
// The linears are sgemm calls through kernels/cpu/blas.hpp (gemm_nt: y = x Wᵀ); the layer
// that strings these together lives in worker/forward.cpp. The naive double references are
// kernels/ref/forward_ref.cpp; tests: `shardq_unit_tests --gtest_filter='Forward*'`,
// benchmark: bench_forward.
//
// Shapes: activations are row-major [n_tokens, dim]; n_tokens = n_seq * seq_len for a batch
// of windows (window s is rows [s*seq_len, (s+1)*seq_len)). q is [n_tokens, n_heads*head_dim],
// k and v are [n_tokens, n_kv_heads*head_dim]; head h of a token is the slice
// [h*head_dim, (h+1)*head_dim) of its row.
#pragma once

#include <cstdint>
#include <vector>

namespace shardq::cpu {

// y[t,:] = x[t,:] / sqrt(mean(x[t,:]²) + eps) * weight  (x == y allowed). The mean square
// is accumulated in double so long rows do not lose the small components.
void rmsnorm(const float* x, const float* weight, float* y, int64_t n_tokens, int64_t dim, float eps);

// Rotary position embedding, HF `rotate_half` convention: in each head, element i < d/2 pairs
// with i + d/2 at angle pos * theta^(-2i/d). The angle is formed in fp32 as HF's
// LlamaRotaryEmbedding (and llama2.c run.c) do, so logits match those implementations.
// `positions[t]` is the position of token t.
void rope_rotate_half(float* x, int64_t n_tokens, int n_heads, int head_dim, const int32_t* positions,
                      float theta);
// theta^(-2i/d) for i < head_dim/2, the inverse frequencies rope_rotate_half uses. The GPU tier
// takes them from here: the device powf may differ by ulps, and one ulp of a frequency is
// ~1e-4 rad of angle at position 2000.
std::vector<float> rope_inv_freq(int head_dim, float theta);

// Causal grouped-query attention over n_seq independent windows of seq_len tokens (fresh
// context in each): out = softmax(q kᵀ / sqrt(head_dim) + causal mask) v per (window, head),
// query head h reading kv head h / (n_heads / n_kv_heads). Softmax in fp32 with max
// subtraction. Scores and the value product are sgemm calls on row blocks of the window, each
// block multiplying only the keys it can see (the causal triangle is not computed).
void attention_causal(const float* q, const float* k, const float* v, float* out, int n_seq, int seq_len,
                      int n_heads, int n_kv_heads, int head_dim);

// One query token at position `pos` against a KV cache holding rows 0..pos
// (k_cache/v_cache [>= pos+1, n_kv_heads*head_dim]): the generation path.
void attention_single(const float* q, const float* k_cache, const float* v_cache, float* out, int pos,
                      int n_heads, int n_kv_heads, int head_dim);

// out[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + exp(-x))  (out may alias gate).
void swiglu(const float* gate, const float* up, float* out, int64_t n);

// y[t,:] += bias for each of n_tokens rows of width dim.
void add_bias(float* y, const float* bias, int64_t n_tokens, int64_t dim);

// cos[t] = cos∠(a[t,:], b[t,:]) per token row, products and norms accumulated in double,
// clamped to [-1, 1]; a zero row has no direction and gives 0 (LIM, worker/importance.hpp).
void token_cosines(const float* a, const float* b, int64_t n_tokens, int64_t dim, double* cos);

// In-place softmax of one row in fp32 with max subtraction.
void softmax_row(float* x, int64_t n);

}  // namespace shardq::cpu
