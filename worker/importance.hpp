// Layer importance scores of Dumitru et al., "Layer-Wise Quantization: A Pragmatic and
// Effective Method for Quantizing LLMs Beyond Integer Bit-Levels" (arXiv:2406.17415), and a
// measured sensitivity.
//
//   LIM(l) = −(1/n) Σ_t cos(h_in,t, h_out,t): the Layer Input Modification score; h_in/h_out
//            are the hidden states entering and leaving decoder layer l for calibration token
//            t. A layer that changes its input more (lower cosine) scores higher = more
//            important.
//   ZD(l)  = |{θ ∈ W_l : |θ − μ_l| / σ_l > 1}| / |W_l|: the z-score distribution score over
//            all weights of the layer's seven linears (μ_l, σ_l the mean and population standard
//            deviation of those weights, one z-score population per layer). Counted two-sided,
//            |z| > 1, as the public implementations of the paper's metric do; the raw fraction
//            is reported, and per the paper a smaller value marks a more important layer.
//   KL     = mean over calibration tokens of KL(p_model ‖ p_replaced), p the next-token
//            distributions, when one layer's weights are replaced (e.g. by a dequantized
//            version): the measured sensitivity the allocator can use.
// Reference implementations live in the tests (test_importance.cpp).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/cpu/hessian.hpp"
#include "worker/forward.hpp"

namespace shardq {

// Σ cos(h_in, h_out) over tokens, kept as a fixed-point integer sum (each token's cosine
// truncated to a multiple of 2^-62) so the score does not depend on how tokens are split into
// micro-batches or ranks, as for the Hessians.
class LimAccumulator {
 public:
  void add(const float* h_in, const float* h_out, int64_t n_tokens, int64_t hidden);
  // The per-token cosines computed elsewhere (cpu::token_cosines or its GPU tier).
  void add_cosines(std::span<const double> cos);
  void merge(const LimAccumulator& other);
  int64_t n_tokens() const { return n_tokens_; }
  cpu::hessian_int cos_sum_fixed() const { return cos_sum_; }
  void merge_fixed(cpu::hessian_int cos_sum, int64_t n_tokens);
  double score() const;  // LIM = −mean cosine (0 when empty)

 private:
  cpu::hessian_int cos_sum_ = 0;
  int64_t n_tokens_ = 0;
};

// ZD of one layer's linear weights.
double zd_score(const LayerWeights& weights);

// Measured sensitivity: caches the reference distributions and the hidden states entering
// every layer for a small calibration batch, so kl_with_layer(l, w) reruns layers l.. only.
class LayerSensitivityProbe {
 public:
  // `model` (all layers, embedding, head) must outlive the probe.
  LayerSensitivityProbe(const ModelWeights& model, std::vector<int32_t> tokens, int n_seq, int seq_len);
  // Mean KL(p_model ‖ p_with_layer_replaced) per token (nats).
  double kl_with_layer(int layer, const LayerWeights& replacement) const;

 private:
  const ModelWeights& model_;
  int n_seq_, seq_len_;
  std::vector<std::vector<float>> layer_inputs_;  // hidden entering layer l, [n_tokens, hidden]
  std::vector<double> ref_log_probs_;             // [n_tokens, vocab]
};

// One-shot form of the probe.
double layer_replacement_kl(const ModelWeights& model, int layer, const LayerWeights& replacement,
                            const std::vector<int32_t>& tokens, int n_seq, int seq_len);

}  // namespace shardq
