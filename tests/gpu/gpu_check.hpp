// Helpers of the GPU parity tests (tests/gpu/*.cpp): skip without a device, compare a GPU
// result with its CPU tier and print the first mismatches and the largest error with how much
// of the tolerance it used (llm.c dev/cuda check_tensor), random data and Hessians, and the
// real stories260K weights read straight from the llama2.c checkpoint.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/model_config.hpp"
#include "common/tensor.hpp"
#include "kernels/cpu/hessian.hpp"
#include "kernels/cuda/cuda_check.hpp"
#include "support/test_support.hpp"
#include "worker/llama_weights.hpp"

namespace shardq::test {

#define SHARDQ_REQUIRE_GPU()                                                          \
  do {                                                                                \
    if (::shardq::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";        \
  } while (0)

// |got - ref| <= atol + rtol·|ref| everywhere; prints up to 5 mismatches and the worst error.
inline ::testing::AssertionResult check_tensor(const std::string& name, const float* got, const float* ref,
                                               std::size_t n, float atol, float rtol) {
  std::size_t bad = 0;
  double worst = 0.0, worst_used = 0.0;
  std::size_t worst_at = 0;
  std::string first;
  for (std::size_t i = 0; i < n; ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    const double tol = atol + rtol * std::fabs(static_cast<double>(ref[i]));
    const double used = tol > 0 ? err / tol : (err > 0 ? INFINITY : 0.0);
    if (!(used <= worst_used)) {
      worst_used = used;
      worst = err;
      worst_at = i;
    }
    if (!(err <= tol) || std::isnan(got[i])) {
      if (bad < 5) first += "  [" + std::to_string(i) + "] gpu " + std::to_string(got[i]) + " cpu " + std::to_string(ref[i]) + "\n";
      ++bad;
    }
  }
  std::printf("%s: %zu values, max |err| %.3g at %zu (%.1f%% of tolerance)\n", name.c_str(), n, worst, worst_at,
              100.0 * worst_used);
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << name << ": " << bad << " of " << n << " values out of tolerance (atol "
                                       << atol << ", rtol " << rtol << "):\n" << first;
}

inline std::vector<float> random_vector(std::size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// H = 2/n XᵀX of x [n, cols] from the CPU accumulator (full symmetric), with the `dead`
// columns of X zeroed.
inline Tensor hessian_of(const std::vector<float>& x, int64_t n, int64_t cols, std::initializer_list<int64_t> dead = {}) {
  std::vector<float> xs = x;
  for (int64_t c : dead)
    for (int64_t t = 0; t < n; ++t) xs[t * cols + c] = 0.0f;
  cpu::HessianAccumulator acc(cols);
  acc.add(xs.data(), n);
  return acc.finalize();
}

// stories260K.bin (llama2.c): header of 7 int32 (dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab, seq_len), then token_embedding [vocab, dim], rms_att [L, dim],
// wq [L, dim, dim], wk [L, kv_dim, dim], wv [L, kv_dim, dim], wo [L, dim, dim],
// rms_ffn [L, dim], w1 [L, hidden, dim], w2 [L, dim, hidden], w3 [L, hidden, dim].
struct Stories260K {
  int dim = 0, hidden = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab = 0, seq_len = 0;
  std::vector<float> token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3;
  int kv_dim() const { return dim / n_heads * n_kv_heads; }
};

inline Stories260K load_stories260k() {
  const auto path = shared_dir() / "models" / "stories260K" / "stories260K.bin";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  Stories260K m;
  int32_t header[7];
  in.read(reinterpret_cast<char*>(header), sizeof header);
  m.dim = header[0], m.hidden = header[1], m.n_layers = header[2], m.n_heads = header[3], m.n_kv_heads = header[4];
  m.vocab = std::abs(header[5]), m.seq_len = header[6];
  auto read = [&](std::vector<float>& v, std::size_t n) {
    v.resize(n);
    in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(float)));
    if (!in) throw std::runtime_error("stories260K.bin is truncated");
  };
  const std::size_t L = m.n_layers, d = m.dim, kv = m.kv_dim(), h = m.hidden;
  read(m.token_embedding, m.vocab * d);
  read(m.rms_att, L * d);
  read(m.wq, L * d * d);
  read(m.wk, L * kv * d);
  read(m.wv, L * kv * d);
  read(m.wo, L * d * d);
  read(m.rms_ffn, L * d);
  read(m.w1, L * h * d);
  read(m.w2, L * d * h);
  read(m.w3, L * h * d);
  return m;
}

// A LayerWeights of the real stories260K layer l (llama2.c rows, used as they are: both tiers
// read the same weights, so the RoPE row order does not matter for parity).
inline LayerWeights stories_layer(const test::Stories260K& m, int l, ModelConfig& c) {
  c.hidden_size = m.dim;
  c.intermediate_size = m.hidden;
  c.num_layers = m.n_layers;
  c.num_heads = m.n_heads;
  c.num_kv_heads = m.n_kv_heads;
  c.head_dim = m.dim / m.n_heads;
  c.vocab_size = m.vocab;
  const int64_t d = m.dim, kv = m.kv_dim(), h = m.hidden;
  auto slice = [](const std::vector<float>& all, int l, int64_t rows, int64_t cols) {
    return Tensor({rows, cols}, std::vector<float>(all.begin() + l * rows * cols, all.begin() + (l + 1) * rows * cols));
  };
  LayerWeights w;
  w.attn_norm = Tensor({d}, std::vector<float>(m.rms_att.begin() + l * d, m.rms_att.begin() + (l + 1) * d));
  w.ffn_norm = Tensor({d}, std::vector<float>(m.rms_ffn.begin() + l * d, m.rms_ffn.begin() + (l + 1) * d));
  w.q_proj = slice(m.wq, l, d, d);
  w.k_proj = slice(m.wk, l, kv, d);
  w.v_proj = slice(m.wv, l, kv, d);
  w.o_proj = slice(m.wo, l, d, d);
  w.gate_proj = slice(m.w1, l, h, d);
  w.down_proj = slice(m.w2, l, d, h);
  w.up_proj = slice(m.w3, l, h, d);
  return w;
}

}  // namespace shardq::test
