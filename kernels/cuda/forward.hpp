// One Llama-family decoder layer on the GPU with the semantics of worker/forward.hpp's
// layer_forward (same LayerWeights, same RMSNorm → q/k/v (+bias) → RoPE → causal GQA
// attention → o_proj + residual → RMSNorm → SwiGLU MLP + residual, positions restarting in
// every window): cuBLAS sgemm (pedantic fp32) for the seven linears, the kernels of
// kernels/cuda/forward_ops.hpp for the rest. Host in/out: the weights and hidden states are
// uploaded, the layer computed, the result (and the requested taps) downloaded — a first
// version for parity and calibration; keeping weights resident across calls is the next step.
// Like kernels/ref, this tier reads worker/'s plain weight structs (no link dependency).
// CPU tier: worker/forward.cpp. Test: shardq_gpu_tests --gtest_filter='*ForwardCuda*'.
#pragma once

#include "common/model_config.hpp"
#include "worker/forward.hpp"
#include "worker/llama_weights.hpp"

namespace shardq::cuda {

// hidden [n_seq*seq_len, hidden_size] (host) in place; `taps` (optional) receives the linear inputs.
void layer_forward_cuda(const ModelConfig& config, const LayerWeights& weights, float* hidden, int n_seq,
                        int seq_len, LayerTaps* taps = nullptr);

}  // namespace shardq::cuda
