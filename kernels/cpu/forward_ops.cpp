// CPU kernels of the decoder forward pass; see forward_ops.hpp.
#include "kernels/cpu/forward_ops.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/blas.hpp"

namespace shardq::cpu {

void rmsnorm(const float* x, const float* weight, float* y, int64_t n_tokens, int64_t dim, float eps) {
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* xr = x + t * dim;
    float* yr = y + t * dim;
    double ss = 0.0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
    for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * weight[i];
  }
}

std::vector<float> rope_inv_freq(int head_dim, float theta) {
  std::vector<float> inv_freq(static_cast<size_t>(head_dim / 2));
  for (int i = 0; i < head_dim / 2; ++i)
    inv_freq[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
  return inv_freq;
}

void rope_rotate_half(float* x, int64_t n_tokens, int n_heads, int head_dim, const int32_t* positions,
                      float theta) {
  const int half = head_dim / 2;
  const std::vector<float> inv_freq = rope_inv_freq(head_dim, theta);
  std::vector<float> cos_t(half), sin_t(half);
  const int64_t row = static_cast<int64_t>(n_heads) * head_dim;
  int32_t last_pos = -1;
  for (int64_t t = 0; t < n_tokens; ++t) {
    if (positions[t] != last_pos) {
      last_pos = positions[t];
      for (int i = 0; i < half; ++i) {
        const float angle = static_cast<float>(last_pos) * inv_freq[i];
        cos_t[i] = std::cos(angle);
        sin_t[i] = std::sin(angle);
      }
    }
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + t * row + static_cast<int64_t>(h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const float a = v[i];
        const float b = v[i + half];
        v[i] = a * cos_t[i] - b * sin_t[i];
        v[i + half] = b * cos_t[i] + a * sin_t[i];
      }
    }
  }
}

void softmax_row(float* x, int64_t n) {
  float max_v = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) max_v = std::max(max_v, x[j]);
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    x[j] = std::exp(x[j] - max_v);
    sum += x[j];
  }
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) x[j] *= inv;
}

namespace {

// Rows of one head (stride `row`) gathered into a contiguous [n, head_dim] block, so the
// sgemm calls below see unit-stride operands.
void gather_head(const float* src, int64_t row, int64_t n, int head_dim, float* dst) {
  for (int64_t t = 0; t < n; ++t) std::copy_n(src + t * row, head_dim, dst + t * head_dim);
}

void scatter_head(const float* src, int64_t row, int64_t n, int head_dim, float* dst) {
  for (int64_t t = 0; t < n; ++t) std::copy_n(src + t * head_dim, head_dim, dst + t * row);
}

// Query rows per block: big enough for sgemm to run well, small enough that the skipped upper
// triangle (keys beyond the block's last row) is most of the masked work.
constexpr int64_t kAttentionBlock = 128;

}  // namespace

void attention_causal(const float* q, const float* k, const float* v, float* out, int n_seq, int seq_len,
                      int n_heads, int n_kv_heads, int head_dim) {
  const int64_t L = seq_len;
  const int64_t q_row = static_cast<int64_t>(n_heads) * head_dim;
  const int64_t kv_row = static_cast<int64_t>(n_kv_heads) * head_dim;
  const int n_rep = n_heads / n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  std::vector<float> kh(L * head_dim), vh(L * head_dim), qh(L * head_dim), oh(L * head_dim);
  std::vector<float> scores(std::min(L, kAttentionBlock) * L);
  for (int s = 0; s < n_seq; ++s) {
    const int64_t base = s * L;
    for (int g = 0; g < n_kv_heads; ++g) {
      gather_head(k + base * kv_row + g * head_dim, kv_row, L, head_dim, kh.data());
      gather_head(v + base * kv_row + g * head_dim, kv_row, L, head_dim, vh.data());
      for (int r = 0; r < n_rep; ++r) {
        const int h = g * n_rep + r;
        gather_head(q + base * q_row + static_cast<int64_t>(h) * head_dim, q_row, L, head_dim, qh.data());
        for (int64_t r0 = 0; r0 < L; r0 += kAttentionBlock) {
          const int64_t r1 = std::min(L, r0 + kAttentionBlock);
          const int64_t m = r1 - r0;
          gemm_nt(m, r1, head_dim, qh.data() + r0 * head_dim, kh.data(), scores.data(), scale, 0.0f);
          for (int64_t i = 0; i < m; ++i) {
            float* row = scores.data() + i * r1;
            const int64_t visible = r0 + i + 1;
            softmax_row(row, visible);
            std::fill(row + visible, row + r1, 0.0f);
          }
          gemm_nn(m, head_dim, r1, scores.data(), vh.data(), oh.data() + r0 * head_dim, 1.0f, 0.0f);
        }
        scatter_head(oh.data(), q_row, L, head_dim, out + base * q_row + static_cast<int64_t>(h) * head_dim);
      }
    }
  }
}

void attention_single(const float* q, const float* k_cache, const float* v_cache, float* out, int pos,
                      int n_heads, int n_kv_heads, int head_dim) {
  const int64_t kv_row = static_cast<int64_t>(n_kv_heads) * head_dim;
  const int n_rep = n_heads / n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  std::vector<float> att(pos + 1);
  for (int h = 0; h < n_heads; ++h) {
    const float* qh = q + static_cast<int64_t>(h) * head_dim;
    const int64_t off = static_cast<int64_t>(h / n_rep) * head_dim;
    for (int t = 0; t <= pos; ++t) {
      const float* kt = k_cache + t * kv_row + off;
      float dot = 0.0f;
      for (int i = 0; i < head_dim; ++i) dot += qh[i] * kt[i];
      att[t] = dot * scale;
    }
    softmax_row(att.data(), pos + 1);
    float* oh = out + static_cast<int64_t>(h) * head_dim;
    std::fill(oh, oh + head_dim, 0.0f);
    for (int t = 0; t <= pos; ++t) {
      const float* vt = v_cache + t * kv_row + off;
      for (int i = 0; i < head_dim; ++i) oh[i] += att[t] * vt[i];
    }
  }
}

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void add_bias(float* y, const float* bias, int64_t n_tokens, int64_t dim) {
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t i = 0; i < dim; ++i) y[t * dim + i] += bias[i];
}

void token_cosines(const float* a, const float* b, int64_t n_tokens, int64_t dim, double* cos) {
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* x = a + t * dim;
    const float* y = b + t * dim;
    double dot = 0, nx = 0, ny = 0;
    for (int64_t i = 0; i < dim; ++i) {
      dot += static_cast<double>(x[i]) * y[i];
      nx += static_cast<double>(x[i]) * x[i];
      ny += static_cast<double>(y[i]) * y[i];
    }
    cos[t] = (nx > 0 && ny > 0) ? std::clamp(dot / std::sqrt(nx * ny), -1.0, 1.0) : 0.0;
  }
}

}  // namespace shardq::cpu
