// One decoder layer on the GPU; see kernels/cuda/forward.hpp.
#include "kernels/cuda/forward.hpp"

#include <vector>

#include <fmt/format.h>

#include "common/error.hpp"
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/forward_ops.hpp"

namespace shardq::cuda {
namespace {

// y [n, out] = alpha · x [n, in] · W [out, in]ᵀ + beta · y, all row-major (the CPU's gemm_nt).
// Column-major, y is yᵀ [out, n] = W_cmᵀ · x_cm with W_cm = Wᵀ [in, out] and x_cm = xᵀ [in, n].
void gemm_nt(cublasHandle_t h, int64_t n, int64_t out, int64_t in, const float* x, const float* w, float* y,
             float alpha = 1.0f, float beta = 0.0f) {
  SHARDQ_CUDA_CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out), static_cast<int>(n),
                                static_cast<int>(in), &alpha, w, static_cast<int>(in), x, static_cast<int>(in), &beta,
                                y, static_cast<int>(out)));
}

void tap(Tensor* dst, const DeviceBuffer<float>& src, int64_t rows, int64_t cols) {
  if (!dst) return;
  dst->shape = {rows, cols};
  dst->data.resize(static_cast<std::size_t>(rows * cols));
  src.download(dst->data.data(), dst->data.size());
}

DeviceBuffer<float> upload(const Tensor& t, int64_t expected, const char* name) {
  if (t.numel() != expected)
    throw error(fmt::format("layer_forward (cuda): weight '{}' has {} values, the config implies {}", name, t.numel(),
                            expected));
  return to_device(t.data);
}

}  // namespace

void layer_forward_cuda(const ModelConfig& c, const LayerWeights& w, float* hidden, int n_seq, int seq_len,
                        LayerTaps* taps) {
  const int64_t n = static_cast<int64_t>(n_seq) * seq_len;
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
  if (n <= 0) return;
  unique_stream stream = make_stream();
  unique_cublas cublas = make_cublas(stream.get());
  cudaStream_t s = stream.get();
  cublasHandle_t cb = cublas.get();

  DeviceBuffer<float> attn_norm = upload(w.attn_norm, h, "input_layernorm");
  DeviceBuffer<float> wq = upload(w.q_proj, qd * h, "q_proj"), wk = upload(w.k_proj, kvd * h, "k_proj"),
                      wv = upload(w.v_proj, kvd * h, "v_proj"), wo = upload(w.o_proj, h * qd, "o_proj");
  DeviceBuffer<float> ffn_norm = upload(w.ffn_norm, h, "post_attention_layernorm");
  DeviceBuffer<float> wg = upload(w.gate_proj, inter * h, "gate_proj"), wu = upload(w.up_proj, inter * h, "up_proj"),
                      wd = upload(w.down_proj, h * inter, "down_proj");

  std::vector<int32_t> positions(static_cast<std::size_t>(n));
  for (int64_t t = 0; t < n; ++t) positions[t] = static_cast<int32_t>(t % seq_len);
  DeviceBuffer<int32_t> d_pos = to_device(positions);
  DeviceBuffer<float> x = to_device(hidden, static_cast<std::size_t>(n * h));
  DeviceBuffer<float> xn(static_cast<std::size_t>(n * h)), q(static_cast<std::size_t>(n * qd)),
      k(static_cast<std::size_t>(n * kvd)), v(static_cast<std::size_t>(n * kvd)), att(static_cast<std::size_t>(n * qd));

  rmsnorm(x.get(), attn_norm.get(), xn.get(), n, h, c.rms_norm_eps, s);
  gemm_nt(cb, n, qd, h, xn.get(), wq.get(), q.get());
  gemm_nt(cb, n, kvd, h, xn.get(), wk.get(), k.get());
  gemm_nt(cb, n, kvd, h, xn.get(), wv.get(), v.get());
  if (c.attention_bias) {
    DeviceBuffer<float> bq = upload(w.q_bias, qd, "q_proj.bias"), bk = upload(w.k_bias, kvd, "k_proj.bias"),
                        bv = upload(w.v_bias, kvd, "v_proj.bias");
    add_bias(q.get(), bq.get(), n, qd, s);
    add_bias(k.get(), bk.get(), n, kvd, s);
    add_bias(v.get(), bv.get(), n, kvd, s);
    SHARDQ_CUDA_CHECK(cudaStreamSynchronize(s));  // before the biases are freed
  }
  rope_rotate_half(q.get(), n, c.num_heads, c.head_dim, d_pos.get(), c.rope_theta, s);
  rope_rotate_half(k.get(), n, c.num_kv_heads, c.head_dim, d_pos.get(), c.rope_theta, s);
  attention_causal(q.get(), k.get(), v.get(), att.get(), n_seq, seq_len, c.num_heads, c.num_kv_heads, c.head_dim, s);
  gemm_nt(cb, n, h, qd, att.get(), wo.get(), x.get(), 1.0f, 1.0f);  // residual folded in (beta = 1)
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(s));
  if (taps) {
    tap(&taps->attn_in, xn, n, h);
    tap(&taps->o_in, att, n, qd);
  }

  rmsnorm(x.get(), ffn_norm.get(), xn.get(), n, h, c.rms_norm_eps, s);
  DeviceBuffer<float> gate(static_cast<std::size_t>(n * inter)), up(static_cast<std::size_t>(n * inter));
  gemm_nt(cb, n, inter, h, xn.get(), wg.get(), gate.get());
  gemm_nt(cb, n, inter, h, xn.get(), wu.get(), up.get());
  swiglu(gate.get(), up.get(), gate.get(), n * inter, s);
  gemm_nt(cb, n, h, inter, gate.get(), wd.get(), x.get(), 1.0f, 1.0f);
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(s));
  if (taps) {
    tap(&taps->mlp_in, xn, n, h);
    tap(&taps->down_in, gate, n, inter);
  }
  x.download(hidden, static_cast<std::size_t>(n * h));
}

}  // namespace shardq::cuda
