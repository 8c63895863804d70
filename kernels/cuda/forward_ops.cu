// Decoder forward kernels on the GPU; the API and the mapping of each kernel are in
// kernels/cuda/forward_ops.hpp.
//   rmsnorm_kernel, rope_rotate_half_kernel, attention_causal_tiled_kernel<kD> (flash-attention
//   tiles, what attention_causal runs), attention_causal_rowwise_kernel (one warp per query row:
//   the reference and fallback), swiglu_kernel, add_bias_kernel, token_cosines_kernel
// CPU reference: kernels/cpu/forward_ops.cpp (and the double references kernels/ref/forward_ref.cpp).
// Test: shardq_gpu_tests --gtest_filter='*ForwardCuda*:*AttentionCuda*'; benchmark: bench_gpu_attention.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "kernels/cpu/forward_ops.hpp"
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

// The host's inverse frequencies (cpu::rope_inv_freq), passed by value in the kernel's
// parameter space, so every angle is the CPU's to the bit.
struct RopeInvFreq {
  float v[attention_max_head_dim / 2];
};

__global__ void rope_rotate_half_kernel(float* x, int64_t n_tokens, int n_heads, int head_dim,
                                        const int32_t* __restrict__ positions, RopeInvFreq freq) {
  const int half = head_dim / 2;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t total = n_tokens * n_heads * half;
  if (idx >= total) return;
  const int i = static_cast<int>(idx % half);
  const int64_t th = idx / half;  // token * n_heads + head
  const int64_t t = th / n_heads;
  const float angle = __fmul_rn(static_cast<float>(positions[t]), freq.v[i]);
  const float c = cosf(angle), s = sinf(angle);
  float* v = x + th * head_dim;
  const float a = v[i], b = v[i + half];
  v[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
  v[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
}

constexpr int attention_warps = 4;
constexpr int attention_regs = attention_max_head_dim / 32;

// The reference path (attention_causal_rowwise): one warp per query row, one key at a time.
__global__ void attention_causal_rowwise_kernel(const float* __restrict__ q, const float* __restrict__ k,
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

// The tiled kernel (FlashAttention, Dao et al. 2022, Algorithm 1, in fp32 on the CUDA cores).
// A block of 256 threads owns a tile of 64 query rows of one (window, head) and walks the key
// tiles of 64 from key 0 up to the diagonal tile, never touching a tile above it. Thread
// (ty, tx) = (tid / 16, tid % 16) owns query rows 4·ty .. 4·ty+3 of the tile: for the score
// tile S = Q Kᵀ the keys tx + 16·j (j < 4), for the output accumulator O the columns
// 64·c + 4·tx .. +3 (c < kD/64). A row is therefore spread over the 16 lanes of one half-warp,
// which reduce its max and sum with xor-shuffles of 8, 4, 2, 1 and keep identical copies of
// its running max m and sum l. Per key tile: m_new = max(m, rowmax S), O and l are scaled by
// exp(m − m_new), P = exp(S − m_new) goes through shared memory (a thread needs the whole P row
// for O += P V), O is divided by l once at the end.
// kD is head_dim rounded up to 64, 128 or 256; Q/K/V columns past head_dim and K/V rows past
// seq_len are zero in shared memory, so every shape runs the same loops (0·garbage could be NaN).
constexpr int attention_tile = 64;           // query rows and keys per tile
constexpr int attention_tile_threads = 256;  // 16 × 16 threads, each 4 rows × 4 keys of S

// Shared-memory row pitches in floats: +4 keeps every row 16-byte aligned for float4 loads and
// moves 8 consecutive rows onto distinct 4-bank groups (the 8 lanes of one LDS.128 phase read
// rows tx .. tx+7 of the K tile), so those loads are free of bank conflicts.
__host__ __device__ constexpr int attention_pitch(int kd) { return kd + 4; }
constexpr int attention_p_pitch = attention_tile + 4;

// Q tile [64][pitch], K-then-V tile [64][pitch] (K and V take turns in one buffer, which keeps
// two blocks resident per SM at kD = 128), P tile [64][68].
constexpr std::size_t attention_tiled_smem_bytes(int kd) {
  return sizeof(float) * attention_tile * (2 * static_cast<std::size_t>(attention_pitch(kd)) + attention_p_pitch);
}

__device__ __forceinline__ float float4_at(const float4& x, int i) {
  return i == 0 ? x.x : i == 1 ? x.y : i == 2 ? x.z : x.w;
}

// Rows row0 .. row0+63 of one head (src points at row 0 of the window, column 0 of the head;
// rows `stride` floats apart) into tile[64][pitch], zero past seq_len and past head_dim.
// Thread t always reads column t % kD, of every (256 / kD)-th row: consecutive threads read
// consecutive columns (coalesced global loads, conflict-free shared stores).
template <int kD>
__device__ __forceinline__ void attention_load_tile(const float* __restrict__ src, int64_t stride, int row0,
                                                    int seq_len, int head_dim, float* tile) {
  constexpr int pitch = attention_pitch(kD);
  constexpr int rows_per_pass = attention_tile_threads / kD;
  const int d = static_cast<int>(threadIdx.x) % kD;
  const bool column_in = d < head_dim;
#pragma unroll 8
  for (int r = static_cast<int>(threadIdx.x) / kD; r < attention_tile; r += rows_per_pass) {
    const int row = row0 + r;
    tile[r * pitch + d] = (column_in && row < seq_len) ? src[static_cast<int64_t>(row) * stride + d] : 0.0f;
  }
}

// blockIdx.x enumerates (query tile, window, head) with the head fastest (the query heads of
// one kv head run side by side and share its K/V in L2) and the query tiles from the last, the
// longest causal row of tiles, to the first, so short blocks fill the tail of the grid.
template <int kD, int kMinBlocks>
__global__ void __launch_bounds__(attention_tile_threads, kMinBlocks)
    attention_causal_tiled_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                  const float* __restrict__ v, float* __restrict__ out, int n_seq, int seq_len,
                                  int n_heads, int n_kv_heads, int head_dim, float scale) {
  constexpr int pitch = attention_pitch(kD);
  constexpr int p_pitch = attention_p_pitch;
  constexpr int o_groups = kD / 64;  // float4 column groups of O per thread
  extern __shared__ float4 attention_smem[];
  float* q_s = reinterpret_cast<float*>(attention_smem);
  float* kv_s = q_s + attention_tile * pitch;
  float* p_s = kv_s + attention_tile * pitch;

  const int n_q_tiles = (seq_len + attention_tile - 1) / attention_tile;
  const int per_q_tile = n_seq * n_heads;
  const int q_tile = n_q_tiles - 1 - static_cast<int>(blockIdx.x) / per_q_tile;
  const int h = static_cast<int>(blockIdx.x) % per_q_tile % n_heads;
  const int window = static_cast<int>(blockIdx.x) % per_q_tile / n_heads;
  const int g = h / (n_heads / n_kv_heads);
  const int ty = static_cast<int>(threadIdx.x) / 16, tx = static_cast<int>(threadIdx.x) % 16;
  const int q0 = q_tile * attention_tile;
  const int64_t base = static_cast<int64_t>(window) * seq_len;
  const int64_t q_stride = static_cast<int64_t>(n_heads) * head_dim;
  const int64_t kv_stride = static_cast<int64_t>(n_kv_heads) * head_dim;
  const float* qh = q + base * q_stride + static_cast<int64_t>(h) * head_dim;
  const float* kh = k + base * kv_stride + static_cast<int64_t>(g) * head_dim;
  const float* vh = v + base * kv_stride + static_cast<int64_t>(g) * head_dim;

  attention_load_tile<kD>(qh, q_stride, q0, seq_len, head_dim, q_s);

  float o[4][4 * o_groups];
  float m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int n = 0; n < 4 * o_groups; ++n) o[i][n] = 0.0f;
  }

  for (int k_tile = 0; k_tile <= q_tile; ++k_tile) {
    const int k0 = k_tile * attention_tile;
    attention_load_tile<kD>(kh, kv_stride, k0, seq_len, head_dim, kv_s);
    __syncthreads();  // K tile (and, the first time, the Q tile) in place

    float s[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) s[i][j] = 0.0f;
#pragma unroll 4
    for (int d = 0; d < kD; d += 4) {
      float4 qv[4], kv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) qv[i] = *reinterpret_cast<const float4*>(q_s + (4 * ty + i) * pitch + d);
#pragma unroll
      for (int j = 0; j < 4; ++j) kv[j] = *reinterpret_cast<const float4*>(kv_s + (tx + 16 * j) * pitch + d);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          s[i][j] = fmaf(qv[i].x, kv[j].x, s[i][j]);
          s[i][j] = fmaf(qv[i].y, kv[j].y, s[i][j]);
          s[i][j] = fmaf(qv[i].z, kv[j].z, s[i][j]);
          s[i][j] = fmaf(qv[i].w, kv[j].w, s[i][j]);
        }
    }

#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int row = q0 + 4 * ty + i;
      float tile_max = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int key = k0 + tx + 16 * j;
        s[i][j] = (key <= row && key < seq_len) ? s[i][j] * scale : -INFINITY;
        tile_max = fmaxf(tile_max, s[i][j]);
      }
#pragma unroll
      for (int off = 8; off > 0; off /= 2) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, off));
      const float m_new = fmaxf(m[i], tile_max);
      // Key 0 is visible to every row (padding rows past seq_len included) and tile 0 comes
      // first, so m_new is finite from the first tile on; the guard keeps -inf − -inf (NaN)
      // out of exp should a row ever see no key.
      const float m_ref = m_new == -INFINITY ? 0.0f : m_new;
      const float correction = expf(m[i] - m_ref);  // 0 on the first tile (m = -inf)
      float tile_sum = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float p = s[i][j] == -INFINITY ? 0.0f : expf(s[i][j] - m_ref);
        tile_sum += p;
        p_s[(4 * ty + i) * p_pitch + tx + 16 * j] = p;
      }
#pragma unroll
      for (int off = 8; off > 0; off /= 2) tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, off);
      l[i] = l[i] * correction + tile_sum;
      m[i] = m_new;
#pragma unroll
      for (int n = 0; n < 4 * o_groups; ++n) o[i][n] *= correction;
    }
    __syncthreads();  // P complete; every thread is done reading the K tile

    attention_load_tile<kD>(vh, kv_stride, k0, seq_len, head_dim, kv_s);
    __syncthreads();  // V tile in place

#pragma unroll 2
    for (int c = 0; c < attention_tile; c += 4) {
      float4 pv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) pv[i] = *reinterpret_cast<const float4*>(p_s + (4 * ty + i) * p_pitch + c);
#pragma unroll
      for (int cc = 0; cc < 4; ++cc)
#pragma unroll
        for (int og = 0; og < o_groups; ++og) {
          const float4 vv = *reinterpret_cast<const float4*>(kv_s + (c + cc) * pitch + 64 * og + 4 * tx);
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const float p = float4_at(pv[i], cc);
            o[i][4 * og + 0] = fmaf(p, vv.x, o[i][4 * og + 0]);
            o[i][4 * og + 1] = fmaf(p, vv.y, o[i][4 * og + 1]);
            o[i][4 * og + 2] = fmaf(p, vv.z, o[i][4 * og + 2]);
            o[i][4 * og + 3] = fmaf(p, vv.w, o[i][4 * og + 3]);
          }
        }
    }
    __syncthreads();  // the next K tile overwrites V, the next P overwrites P
  }

  float* oh = out + base * q_stride + static_cast<int64_t>(h) * head_dim;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = q0 + 4 * ty + i;
    if (row >= seq_len) continue;
    const float inv_l = 1.0f / l[i];
#pragma unroll
    for (int og = 0; og < o_groups; ++og)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int d = 64 * og + 4 * tx + e;
        if (d < head_dim) oh[static_cast<int64_t>(row) * q_stride + d] = o[i][4 * og + e] * inv_l;
      }
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
  if (head_dim > attention_max_head_dim)
    detail::throw_message("rope_rotate_half (cuda): head_dim must be at most 256", __FILE__, __LINE__);
  RopeInvFreq freq{};
  const std::vector<float> inv_freq = cpu::rope_inv_freq(head_dim, theta);
  std::copy(inv_freq.begin(), inv_freq.end(), freq.v);
  rope_rotate_half_kernel<<<grid_for(total, 256), 256, 0, stream>>>(d_x, n_tokens, n_heads, head_dim, d_positions,
                                                                    freq);
  SHARDQ_CUDA_CHECK_LAUNCH();
}

namespace {

void attention_check_shape(int n_heads, int n_kv_heads, int head_dim) {
  if (head_dim > attention_max_head_dim || head_dim < 1)
    detail::throw_message("attention_causal (cuda): head_dim must be in [1, 256]", __FILE__, __LINE__);
  if (n_heads < 1 || n_kv_heads < 1 || n_heads % n_kv_heads != 0)
    detail::throw_message("attention_causal (cuda): n_heads must be a positive multiple of n_kv_heads", __FILE__,
                          __LINE__);
}

int attention_tiled_head_dim(int head_dim) { return head_dim <= 64 ? 64 : head_dim <= 128 ? 128 : 256; }

}  // namespace

bool attention_tiled_available(int head_dim) {
  const std::size_t bytes = attention_tiled_smem_bytes(attention_tiled_head_dim(head_dim));
  int device = 0, optin = 0;
  SHARDQ_CUDA_CHECK(cudaGetDevice(&device));
  SHARDQ_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return bytes <= static_cast<std::size_t>(optin);
}

namespace {

// Launches the tiled kernel for head_dims up to kD; false (nothing launched) when the device
// cannot give a block kD's shared memory (kD = 256 needs 147 KiB: sm_80 and sm_90 can, the
// 99 KiB of sm_86/sm_89 cannot).
template <int kD, int kMinBlocks>
bool attention_launch_tiled(const float* d_q, const float* d_k, const float* d_v, float* d_out, int n_seq,
                            int seq_len, int n_heads, int n_kv_heads, int head_dim, cudaStream_t stream) {
  constexpr std::size_t bytes = attention_tiled_smem_bytes(kD);
  if (!attention_tiled_available(head_dim)) return false;
  const int64_t n_q_tiles = (seq_len + attention_tile - 1) / attention_tile;
  const int64_t blocks = n_q_tiles * n_seq * n_heads;
  if (blocks > 0x7fffffff)
    detail::throw_message("attention_causal (cuda): more than 2^31-1 (query tile, window, head) blocks", __FILE__,
                          __LINE__);
  auto* kernel = attention_causal_tiled_kernel<kD, kMinBlocks>;
  SHARDQ_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  const float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  kernel<<<static_cast<unsigned>(blocks), attention_tile_threads, bytes, stream>>>(
      d_q, d_k, d_v, d_out, n_seq, seq_len, n_heads, n_kv_heads, head_dim, scale);
  SHARDQ_CUDA_CHECK_LAUNCH();
  return true;
}

}  // namespace

void attention_causal(const float* d_q, const float* d_k, const float* d_v, float* d_out, int n_seq, int seq_len,
                      int n_heads, int n_kv_heads, int head_dim, cudaStream_t stream) {
  attention_check_shape(n_heads, n_kv_heads, head_dim);
  if (n_seq <= 0 || seq_len <= 0) return;
  bool launched = false;
  // Two blocks per SM at kD ≤ 128 (≤ 83 KiB of shared memory and ≤ 128 registers a thread each);
  // kD = 256 keeps 64 O values a thread and one block per SM.
  switch (attention_tiled_head_dim(head_dim)) {
    case 64:
      launched = attention_launch_tiled<64, 2>(d_q, d_k, d_v, d_out, n_seq, seq_len, n_heads, n_kv_heads, head_dim,
                                               stream);
      break;
    case 128:
      launched = attention_launch_tiled<128, 2>(d_q, d_k, d_v, d_out, n_seq, seq_len, n_heads, n_kv_heads, head_dim,
                                                stream);
      break;
    default:
      launched = attention_launch_tiled<256, 1>(d_q, d_k, d_v, d_out, n_seq, seq_len, n_heads, n_kv_heads, head_dim,
                                                stream);
      break;
  }
  if (!launched)
    attention_causal_rowwise(d_q, d_k, d_v, d_out, n_seq, seq_len, n_heads, n_kv_heads, head_dim, stream);
}

void attention_causal_rowwise(const float* d_q, const float* d_k, const float* d_v, float* d_out, int n_seq,
                              int seq_len, int n_heads, int n_kv_heads, int head_dim, cudaStream_t stream) {
  attention_check_shape(n_heads, n_kv_heads, head_dim);
  if (n_seq <= 0 || seq_len <= 0) return;
  if (n_seq > 65535 || n_heads > 65535)
    detail::throw_message("attention_causal_rowwise (cuda): n_seq and n_heads must be at most 65535", __FILE__,
                          __LINE__);
  const dim3 grid(grid_for(seq_len, attention_warps), static_cast<unsigned>(n_heads), static_cast<unsigned>(n_seq));
  const float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  attention_causal_rowwise_kernel<<<grid, attention_warps * 32, 0, stream>>>(d_q, d_k, d_v, d_out, seq_len, n_heads,
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
