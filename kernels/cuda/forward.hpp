// One Llama-family decoder layer on the GPU with the semantics of worker/forward.hpp's
// layer_forward (same LayerWeights, same RMSNorm → q/k/v (+bias) → RoPE → causal GQA
// attention → o_proj + residual → RMSNorm → SwiGLU MLP + residual, positions restarting in
// every window): the seven linears through kernels/cuda/matmul.hpp in the layer's matmul
// precision (tf32x3 splits the weights once per change), the kernels of
// kernels/cuda/forward_ops.hpp for the rest.
//
// LayerForwardCuda keeps one layer's weights resident and runs it on device hidden states,
// reusing its activation workspace across calls (the sequential schedule runs every
// calibration micro-batch through a layer twice: once for the statistics, once quantized).
// The next layer's weights can be staged into a second buffer set on a copy stream from
// another host thread while this layer computes, so a layer change costs a buffer swap
// instead of a blocking upload (~0.9 GB per Llama-3-8B layer).
// The linear inputs are handed to a tap callback on the layer's stream as they are produced,
// so the Hessians are accumulated without keeping four tap buffers alive.
// Like kernels/ref, this tier reads worker/'s plain weight structs (no link dependency).
// CPU tier: worker/forward.cpp. Test: shardq_gpu_tests --gtest_filter='*ForwardCuda*'.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "common/model_config.hpp"
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/matmul.hpp"
#include "worker/forward.hpp"
#include "worker/llama_weights.hpp"

namespace shardq::cuda {

// Where a linear group's input is tapped (the four GPTQ Hessians of a layer).
enum class layer_tap { attn_in, o_in, mlp_in, down_in };

class LayerForwardCuda {
 public:
  // Called with a device matrix [rows, cols] (row-major) on the layer's stream; it must
  // enqueue its reads on that stream (or synchronise) before returning.
  using tap_fn = std::function<void(layer_tap, const float* d_x, int64_t rows, int64_t cols)>;

  LayerForwardCuda(const ModelConfig& config, cudaStream_t stream, matmul_precision precision = matmul_precision::fp32);

  // Uploads the layer's weights (checked against the config).
  void load(const LayerWeights& weights);
  // Starts copying `next` into the second buffer set on the layer's copy stream and returns
  // without waiting for the layer's work: may run on another host thread (it makes the
  // layer's device current there) while forward() runs. `next` must stay alive and unchanged
  // until load_staged(next). Calls of stage, load and load_staged are serialised.
  void stage(const LayerWeights& next);
  // load(weights) by swapping in the staged set when it holds `weights` (the same tensors'
  // buffers as the last stage); otherwise the plain load.
  void load_staged(const LayerWeights& weights);
  // The device weights [out, in] of linear `kind` (q_proj … down_proj), e.g. to replace them
  // with their dequantized values in place (the mutable access marks the linear changed).
  float* linear(const std::string& kind);
  const float* linear(const std::string& kind) const;

  // d_hidden [n_seq*seq_len, hidden] in place.
  void forward(float* d_hidden, int n_seq, int seq_len, const tap_fn& tap = {});

  cudaStream_t stream() const { return stream_; }

 private:
  enum linear_index { q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, n_linears };
  static linear_index index_of(const std::string& kind);
  void reserve(int64_t n_tokens, int seq_len);
  // y [n, out] = x [n, in] · W[i]ᵀ + beta · y (row-major), W[i] with its cached split.
  void linear_forward(linear_index i, const float* x, int64_t n, float* y, float beta = 0.0f);

  // One layer's weights on the device; `sources` the host buffers it was copied from.
  struct WeightSet {
    DeviceBuffer<float> attn_norm, ffn_norm, bq, bk, bv;
    DeviceBuffer<float> w[n_linears];
    std::vector<const float*> sources;
  };
  // Copies `weights` (checked against the config) into `set` on `stream`.
  void fill(WeightSet& set, const LayerWeights& weights, cudaStream_t stream) const;
  // The host buffers of every tensor of `weights` (what identifies a staged set).
  std::vector<const float*> sources_of(const LayerWeights& weights) const;

  ModelConfig config_;
  cudaStream_t stream_;
  int device_;
  Matmul matmul_;
  bool loaded_ = false;
  WeightSet current_, staged_;
  bool staged_valid_ = false;
  unique_stream copy_stream_;
  unique_event staged_done_, current_released_;
  bool released_recorded_ = false;
  std::mutex stage_mutex_;
  int64_t w_out_[n_linears] = {}, w_in_[n_linears] = {};
  Tf32SplitCache w_split_[n_linears];
  int64_t capacity_ = 0;  // tokens the workspace holds
  int positions_seq_len_ = 0;
  DeviceBuffer<int32_t> positions_;
  DeviceBuffer<float> xn_, q_, k_, v_, att_, gate_, up_;
};

// Host in/out convenience (tests): upload, one forward, download; `taps` (optional)
// receives the linear inputs.
void layer_forward_cuda(const ModelConfig& config, const LayerWeights& weights, float* hidden, int n_seq,
                        int seq_len, LayerTaps* taps = nullptr);

}  // namespace shardq::cuda
