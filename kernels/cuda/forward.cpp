// One decoder layer on the GPU; see kernels/cuda/forward.hpp.
#include "kernels/cuda/forward.hpp"

#include <vector>

#include <fmt/format.h>

#include "common/error.hpp"
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

void upload_checked(DeviceBuffer<float>& d, const Tensor& t, int64_t expected, const char* name) {
  if (t.numel() != expected)
    throw error(fmt::format("layer_forward (cuda): weight '{}' has {} values, the config implies {}", name, t.numel(),
                            expected));
  if (d.size() != static_cast<std::size_t>(expected)) d = DeviceBuffer<float>(static_cast<std::size_t>(expected));
  d.upload(t.data);
}

}  // namespace

LayerForwardCuda::LayerForwardCuda(const ModelConfig& config, cudaStream_t stream, matmul_precision precision)
    : config_(config), stream_(stream), cublas_(make_cublas(stream, precision)) {}

void LayerForwardCuda::load(const LayerWeights& w) {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
  // The previous forward may still read the buffers being replaced.
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
  upload_checked(attn_norm_, w.attn_norm, h, "input_layernorm");
  upload_checked(ffn_norm_, w.ffn_norm, h, "post_attention_layernorm");
  upload_checked(wq_, w.q_proj, qd * h, "q_proj");
  upload_checked(wk_, w.k_proj, kvd * h, "k_proj");
  upload_checked(wv_, w.v_proj, kvd * h, "v_proj");
  upload_checked(wo_, w.o_proj, h * qd, "o_proj");
  upload_checked(wg_, w.gate_proj, inter * h, "gate_proj");
  upload_checked(wu_, w.up_proj, inter * h, "up_proj");
  upload_checked(wd_, w.down_proj, h * inter, "down_proj");
  if (c.attention_bias) {
    upload_checked(bq_, w.q_bias, qd, "q_proj.bias");
    upload_checked(bk_, w.k_bias, kvd, "k_proj.bias");
    upload_checked(bv_, w.v_bias, kvd, "v_proj.bias");
  }
  loaded_ = true;
}

const float* LayerForwardCuda::linear(const std::string& kind) const {
  if (kind == "q_proj") return wq_.get();
  if (kind == "k_proj") return wk_.get();
  if (kind == "v_proj") return wv_.get();
  if (kind == "o_proj") return wo_.get();
  if (kind == "gate_proj") return wg_.get();
  if (kind == "up_proj") return wu_.get();
  if (kind == "down_proj") return wd_.get();
  throw error(fmt::format("layer_forward (cuda): no linear '{}'", kind));
}

float* LayerForwardCuda::linear(const std::string& kind) {
  return const_cast<float*>(static_cast<const LayerForwardCuda&>(*this).linear(kind));
}

void LayerForwardCuda::reserve(int64_t n, int seq_len) {
  const ModelConfig& c = config_;
  if (n > capacity_) {
    SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
    const auto un = static_cast<std::size_t>(n);
    xn_ = DeviceBuffer<float>(un * c.hidden_size);
    q_ = DeviceBuffer<float>(un * c.q_dim());
    k_ = DeviceBuffer<float>(un * c.kv_dim());
    v_ = DeviceBuffer<float>(un * c.kv_dim());
    att_ = DeviceBuffer<float>(un * c.q_dim());
    gate_ = DeviceBuffer<float>(un * c.intermediate_size);
    up_ = DeviceBuffer<float>(un * c.intermediate_size);
    positions_ = DeviceBuffer<int32_t>(un);
    capacity_ = n;
    positions_seq_len_ = 0;
  }
  if (positions_seq_len_ != seq_len) {
    std::vector<int32_t> positions(static_cast<std::size_t>(capacity_));
    for (int64_t t = 0; t < capacity_; ++t) positions[static_cast<std::size_t>(t)] = static_cast<int32_t>(t % seq_len);
    positions_.upload(positions);
    positions_seq_len_ = seq_len;
  }
}

void LayerForwardCuda::forward(float* x, int n_seq, int seq_len, const tap_fn& tap) {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(n_seq) * seq_len;
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
  if (n <= 0) return;
  if (!loaded_) throw error("layer_forward (cuda): no layer loaded");
  reserve(n, seq_len);
  cudaStream_t s = stream_;
  cublasHandle_t cb = cublas_.get();

  rmsnorm(x, attn_norm_.get(), xn_.get(), n, h, c.rms_norm_eps, s);
  if (tap) tap(layer_tap::attn_in, xn_.get(), n, h);
  gemm_nt(cb, n, qd, h, xn_.get(), wq_.get(), q_.get());
  gemm_nt(cb, n, kvd, h, xn_.get(), wk_.get(), k_.get());
  gemm_nt(cb, n, kvd, h, xn_.get(), wv_.get(), v_.get());
  if (c.attention_bias) {
    add_bias(q_.get(), bq_.get(), n, qd, s);
    add_bias(k_.get(), bk_.get(), n, kvd, s);
    add_bias(v_.get(), bv_.get(), n, kvd, s);
  }
  rope_rotate_half(q_.get(), n, c.num_heads, c.head_dim, positions_.get(), c.rope_theta, s);
  rope_rotate_half(k_.get(), n, c.num_kv_heads, c.head_dim, positions_.get(), c.rope_theta, s);
  attention_causal(q_.get(), k_.get(), v_.get(), att_.get(), n_seq, seq_len, c.num_heads, c.num_kv_heads, c.head_dim, s);
  if (tap) tap(layer_tap::o_in, att_.get(), n, qd);
  gemm_nt(cb, n, h, qd, att_.get(), wo_.get(), x, 1.0f, 1.0f);  // residual folded in (beta = 1)

  rmsnorm(x, ffn_norm_.get(), xn_.get(), n, h, c.rms_norm_eps, s);
  if (tap) tap(layer_tap::mlp_in, xn_.get(), n, h);
  gemm_nt(cb, n, inter, h, xn_.get(), wg_.get(), gate_.get());
  gemm_nt(cb, n, inter, h, xn_.get(), wu_.get(), up_.get());
  swiglu(gate_.get(), up_.get(), gate_.get(), n * inter, s);
  if (tap) tap(layer_tap::down_in, gate_.get(), n, inter);
  gemm_nt(cb, n, h, inter, gate_.get(), wd_.get(), x, 1.0f, 1.0f);
}

void layer_forward_cuda(const ModelConfig& c, const LayerWeights& w, float* hidden, int n_seq, int seq_len,
                        LayerTaps* taps) {
  const int64_t n = static_cast<int64_t>(n_seq) * seq_len;
  if (n <= 0) return;
  unique_stream stream = make_stream();
  LayerForwardCuda layer(c, stream.get());
  layer.load(w);
  DeviceBuffer<float> x = to_device(hidden, static_cast<std::size_t>(n * c.hidden_size));
  const auto download = [&](const float* d, int64_t rows, int64_t cols, Tensor& dst) {
    SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
    dst.shape = {rows, cols};
    dst.data.resize(static_cast<std::size_t>(rows * cols));
    SHARDQ_CUDA_CHECK(cudaMemcpy(dst.data.data(), d, dst.data.size() * sizeof(float), cudaMemcpyDeviceToHost));
  };
  LayerForwardCuda::tap_fn tap;
  if (taps) {
    tap = [&](layer_tap point, const float* d, int64_t rows, int64_t cols) {
      switch (point) {
        case layer_tap::attn_in: download(d, rows, cols, taps->attn_in); break;
        case layer_tap::o_in: download(d, rows, cols, taps->o_in); break;
        case layer_tap::mlp_in: download(d, rows, cols, taps->mlp_in); break;
        case layer_tap::down_in: download(d, rows, cols, taps->down_in); break;
      }
    };
  }
  layer.forward(x.get(), n_seq, seq_len, tap);
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  x.download(hidden, static_cast<std::size_t>(n * c.hidden_size));
}

}  // namespace shardq::cuda
