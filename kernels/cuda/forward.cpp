// One decoder layer on the GPU; see kernels/cuda/forward.hpp.
#include "kernels/cuda/forward.hpp"

#include <vector>

#include <fmt/format.h>

#include "common/error.hpp"
#include "kernels/cuda/forward_ops.hpp"

namespace shardq::cuda {
namespace {

// In LayerForwardCuda::linear_index order.
constexpr const char* linear_names[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

int current_device() {
  int d = 0;
  SHARDQ_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

}  // namespace

LayerForwardCuda::LayerForwardCuda(const ModelConfig& config, cudaStream_t stream, matmul_precision precision)
    : config_(config),
      stream_(stream),
      device_(current_device()),
      matmul_(stream, precision),
      copy_stream_(make_stream(/*non_blocking=*/true)),
      staged_done_(make_event()),
      current_released_(make_event()) {
  const int64_t h = config.hidden_size, qd = config.q_dim(), kvd = config.kv_dim(), inter = config.intermediate_size;
  const int64_t out[n_linears] = {qd, kvd, kvd, h, inter, inter, h}, in[n_linears] = {h, h, h, qd, h, h, inter};
  for (int i = 0; i < n_linears; ++i) {
    w_out_[i] = out[i];
    w_in_[i] = in[i];
  }
}

LayerForwardCuda::linear_index LayerForwardCuda::index_of(const std::string& kind) {
  for (int i = 0; i < n_linears; ++i)
    if (kind == linear_names[i]) return static_cast<linear_index>(i);
  throw error(fmt::format("layer_forward (cuda): no linear '{}'", kind));
}

void LayerForwardCuda::fill(WeightSet& set, const LayerWeights& w, cudaStream_t stream) const {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  set.sources.clear();  // a throw below leaves the set matching nothing
  // Pageable sources: each copy returns once the driver holds the data, so `w` may go after.
  const auto copy = [&](DeviceBuffer<float>& d, const Tensor& t, int64_t expected, const char* name) {
    if (t.numel() != expected)
      throw error(fmt::format("layer_forward (cuda): weight '{}' has {} values, the config implies {}", name,
                              t.numel(), expected));
    if (d.size() != static_cast<std::size_t>(expected)) d = DeviceBuffer<float>(static_cast<std::size_t>(expected));
    copy_async(d.get(), t.data.data(), t.data.size(), stream);
  };
  copy(set.attn_norm, w.attn_norm, h, "input_layernorm");
  copy(set.ffn_norm, w.ffn_norm, h, "post_attention_layernorm");
  const auto linears = w.linears();  // HF order, the linear_index order
  for (int i = 0; i < n_linears; ++i) copy(set.w[i], *linears[i].second, w_out_[i] * w_in_[i], linear_names[i]);
  if (c.attention_bias) {
    copy(set.bq, w.q_bias, qd, "q_proj.bias");
    copy(set.bk, w.k_bias, kvd, "k_proj.bias");
    copy(set.bv, w.v_bias, kvd, "v_proj.bias");
  }
  set.sources = sources_of(w);
}

std::vector<const float*> LayerForwardCuda::sources_of(const LayerWeights& w) const {
  std::vector<const float*> sources;
  for (const Tensor* t : {&w.attn_norm, &w.ffn_norm, &w.q_bias, &w.k_bias, &w.v_bias}) sources.push_back(t->data.data());
  for (const auto& linear : w.linears()) sources.push_back(linear.second->data.data());
  return sources;
}

void LayerForwardCuda::load(const LayerWeights& w) {
  const std::lock_guard<std::mutex> lock(stage_mutex_);
  // The previous forward may still read the buffers being replaced (and a reallocation frees them).
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
  loaded_ = false;
  fill(current_, w, stream_);
  for (Tf32SplitCache& split : w_split_) split.invalidate();
  loaded_ = true;
}

void LayerForwardCuda::stage(const LayerWeights& next) {
  const std::lock_guard<std::mutex> lock(stage_mutex_);
  SHARDQ_CUDA_CHECK(cudaSetDevice(device_));  // this host thread's current device
  staged_valid_ = false;
  // The staged set was the current one until the last swap: its last reader is that point.
  if (released_recorded_) SHARDQ_CUDA_CHECK(cudaStreamWaitEvent(copy_stream_.get(), current_released_.get(), 0));
  fill(staged_, next, copy_stream_.get());
  SHARDQ_CUDA_CHECK(cudaEventRecord(staged_done_.get(), copy_stream_.get()));
  staged_valid_ = true;
}

void LayerForwardCuda::load_staged(const LayerWeights& w) {
  {
    const std::lock_guard<std::mutex> lock(stage_mutex_);
    if (staged_valid_ && sources_of(w) == staged_.sources) {
      SHARDQ_CUDA_CHECK(cudaStreamWaitEvent(stream_, staged_done_.get(), 0));  // the copies land first
      std::swap(current_, staged_);
      SHARDQ_CUDA_CHECK(cudaEventRecord(current_released_.get(), stream_));
      released_recorded_ = true;
      staged_valid_ = false;
      for (Tf32SplitCache& split : w_split_) split.invalidate();
      loaded_ = true;
      return;
    }
  }
  load(w);
}

const float* LayerForwardCuda::linear(const std::string& kind) const { return current_.w[index_of(kind)].get(); }

float* LayerForwardCuda::linear(const std::string& kind) {
  const linear_index i = index_of(kind);
  w_split_[i].invalidate();
  return current_.w[i].get();
}

// Row-major y [n, out] = x [n, in] · Wᵀ is column-major yᵀ [out, n] = W_cmᵀ · x_cm with
// W_cm = Wᵀ [in, out] and x_cm = xᵀ [in, n] (the CPU's gemm_nt).
void LayerForwardCuda::linear_forward(linear_index i, const float* x, int64_t n, float* y, float beta) {
  const int64_t out = w_out_[i], in = w_in_[i];
  const MatmulOperand w =
      w_split_[i].operand(current_.w[i].get(), static_cast<std::size_t>(out * in), matmul_.precision(), stream_);
  matmul_.gemm(CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, 1.0f, w, in, {x}, in, beta, y, out);
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
    // upload() is a synchronous copy on the legacy stream, which does not wait for a
    // non-blocking stream_: the previous forward's RoPE may still read positions_.
    SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_));
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

  rmsnorm(x, current_.attn_norm.get(), xn_.get(), n, h, c.rms_norm_eps, s);
  if (tap) tap(layer_tap::attn_in, xn_.get(), n, h);
  linear_forward(q_proj, xn_.get(), n, q_.get());
  linear_forward(k_proj, xn_.get(), n, k_.get());
  linear_forward(v_proj, xn_.get(), n, v_.get());
  if (c.attention_bias) {
    add_bias(q_.get(), current_.bq.get(), n, qd, s);
    add_bias(k_.get(), current_.bk.get(), n, kvd, s);
    add_bias(v_.get(), current_.bv.get(), n, kvd, s);
  }
  rope_rotate_half(q_.get(), n, c.num_heads, c.head_dim, positions_.get(), c.rope_theta, s);
  rope_rotate_half(k_.get(), n, c.num_kv_heads, c.head_dim, positions_.get(), c.rope_theta, s);
  attention_causal(q_.get(), k_.get(), v_.get(), att_.get(), n_seq, seq_len, c.num_heads, c.num_kv_heads, c.head_dim, s);
  if (tap) tap(layer_tap::o_in, att_.get(), n, qd);
  linear_forward(o_proj, att_.get(), n, x, 1.0f);  // residual folded in (beta = 1)

  rmsnorm(x, current_.ffn_norm.get(), xn_.get(), n, h, c.rms_norm_eps, s);
  if (tap) tap(layer_tap::mlp_in, xn_.get(), n, h);
  linear_forward(gate_proj, xn_.get(), n, gate_.get());
  linear_forward(up_proj, xn_.get(), n, up_.get());
  swiglu(gate_.get(), up_.get(), gate_.get(), n * inter, s);
  if (tap) tap(layer_tap::down_in, gate_.get(), n, inter);
  linear_forward(down_proj, gate_.get(), n, x, 1.0f);
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
