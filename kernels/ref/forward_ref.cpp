// Reference decoder forward pass in double; see forward_ref.hpp.
#include "kernels/ref/forward_ref.hpp"

#include <algorithm>
#include <cmath>

namespace shardq::ref {

namespace {

std::vector<double> rmsnorm(const std::vector<double>& x, const Tensor& w, int64_t n, int64_t d, double eps) {
  std::vector<double> y(x.size());
  for (int64_t t = 0; t < n; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += x[t * d + i] * x[t * d + i];
    const double inv = 1.0 / std::sqrt(ss / d + eps);
    for (int64_t i = 0; i < d; ++i) y[t * d + i] = x[t * d + i] * inv * w.data[i];
  }
  return y;
}

// y [n, rows] = x [n, cols] · Wᵀ (+ bias)
std::vector<double> linear(const std::vector<double>& x, const Tensor& w, const Tensor* bias, int64_t n) {
  const int64_t rows = w.rows(), cols = w.cols();
  std::vector<double> y(n * rows);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double acc = (bias && !bias->empty()) ? bias->data[r] : 0.0;
      for (int64_t c = 0; c < cols; ++c) acc += x[t * cols + c] * w.data[r * cols + c];
      y[t * rows + r] = acc;
    }
  return y;
}

void rope(std::vector<double>& x, int64_t n, int heads, int hd, int seq_len, double theta) {
  for (int64_t t = 0; t < n; ++t) {
    const int pos = static_cast<int>(t % seq_len);
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < hd / 2; ++i) {
        const double angle = pos * std::pow(theta, -2.0 * i / hd);
        double& a = x[t * heads * hd + h * hd + i];
        double& b = x[t * heads * hd + h * hd + i + hd / 2];
        const double a0 = a, b0 = b;
        a = a0 * std::cos(angle) - b0 * std::sin(angle);
        b = b0 * std::cos(angle) + a0 * std::sin(angle);
      }
  }
}

}  // namespace

std::vector<double> layer_forward_ref(const ModelConfig& c, const LayerWeights& w, const std::vector<double>& hidden,
                                      int n_seq, int seq_len, LayerTapsRef* taps) {
  const int64_t n = static_cast<int64_t>(n_seq) * seq_len, h = c.hidden_size, hd = c.head_dim;
  const int64_t qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
  const int n_rep = c.num_heads / c.num_kv_heads;
  std::vector<double> x = hidden;
  std::vector<double> xn = rmsnorm(x, w.attn_norm, n, h, c.rms_norm_eps);
  std::vector<double> q = linear(xn, w.q_proj, &w.q_bias, n);
  std::vector<double> k = linear(xn, w.k_proj, &w.k_bias, n);
  std::vector<double> v = linear(xn, w.v_proj, &w.v_bias, n);
  rope(q, n, c.num_heads, c.head_dim, seq_len, c.rope_theta);
  rope(k, n, c.num_kv_heads, c.head_dim, seq_len, c.rope_theta);
  std::vector<double> att(n * qd, 0.0);
  for (int s = 0; s < n_seq; ++s)
    for (int head = 0; head < c.num_heads; ++head) {
      const int g = head / n_rep;
      for (int i = 0; i < seq_len; ++i) {
        const int64_t ti = static_cast<int64_t>(s) * seq_len + i;
        std::vector<double> score(i + 1);
        double mx = -1e300;
        for (int j = 0; j <= i; ++j) {
          const int64_t tj = static_cast<int64_t>(s) * seq_len + j;
          double dot = 0;
          for (int64_t e = 0; e < hd; ++e) dot += q[ti * qd + head * hd + e] * k[tj * kvd + g * hd + e];
          score[j] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, score[j]);
        }
        double sum = 0;
        for (double& sc : score) sum += (sc = std::exp(sc - mx));
        for (int j = 0; j <= i; ++j) {
          const int64_t tj = static_cast<int64_t>(s) * seq_len + j;
          for (int64_t e = 0; e < hd; ++e) att[ti * qd + head * hd + e] += score[j] / sum * v[tj * kvd + g * hd + e];
        }
      }
    }
  std::vector<double> o = linear(att, w.o_proj, nullptr, n);
  for (int64_t i = 0; i < n * h; ++i) x[i] += o[i];
  std::vector<double> xn2 = rmsnorm(x, w.ffn_norm, n, h, c.rms_norm_eps);
  std::vector<double> gate = linear(xn2, w.gate_proj, nullptr, n);
  std::vector<double> up = linear(xn2, w.up_proj, nullptr, n);
  std::vector<double> act(n * inter);
  for (int64_t i = 0; i < n * inter; ++i) act[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
  std::vector<double> down = linear(act, w.down_proj, nullptr, n);
  for (int64_t i = 0; i < n * h; ++i) x[i] += down[i];
  if (taps) *taps = {xn, att, xn2, act};
  return x;
}

std::vector<double> embed_ref(const ModelWeights& m, const std::vector<int32_t>& tokens) {
  const int64_t h = m.config.hidden_size;
  std::vector<double> x(tokens.size() * h);
  for (size_t t = 0; t < tokens.size(); ++t)
    for (int64_t i = 0; i < h; ++i) x[t * h + i] = m.embed_tokens.data[tokens[t] * h + i];
  return x;
}

std::vector<double> model_forward_ref(const ModelWeights& m, const std::vector<int32_t>& tokens, int n_seq,
                                      int seq_len) {
  const ModelConfig& c = m.config;
  const int64_t n = static_cast<int64_t>(tokens.size());
  std::vector<double> x = embed_ref(m, tokens);
  for (const LayerWeights& w : m.layers) x = layer_forward_ref(c, w, x, n_seq, seq_len);
  std::vector<double> xn = rmsnorm(x, m.final_norm, n, c.hidden_size, c.rms_norm_eps);
  return linear(xn, m.head(), nullptr, n);
}

}  // namespace shardq::ref
