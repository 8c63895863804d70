// Perplexity evaluation by the protocol of DESIGN.md ("Evaluation protocol of shardq eval"),
// so figures compare across tools:
//   the text is split into documents on `separator` ("<|endoftext|>"; a text without it is one
//   document); each stripped, non-empty document is encoded with BOS first, and the encodings
//   are concatenated into one stream U. Window k is BOS + U[1+(W−1)k : 1+(W−1)(k+1)] (fresh
//   context in each, the last window may be shorter), so every token of U after U[0] is
//   predicted exactly once; ppl = exp(total NLL / predicted tokens), log-softmax in double.
// With a reference model (--ref): mean KL(ref ‖ model) per predicted token and the fraction of
// positions where both argmaxes agree (llama.cpp `perplexity --kl-divergence` measures).
// Tests: `shardq_unit_tests --gtest_filter='Eval*'`, ctest -L cli (eval_generate_tests.cmake).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "common/tokenizer.hpp"
#include "worker/llama_weights.hpp"

namespace shardq {

// Documents of `text` tokenized as above, concatenated (the stream U). ASCII whitespace is
// stripped from both ends of each document (Python str.strip() on the ASCII range).
std::vector<int32_t> document_stream(const Tokenizer& tokenizer, std::string_view text,
                                     std::string_view separator = "<|endoftext|>");

// Start offsets into U of the windows' predicted spans: window k predicts U[b_k : e_k] with
// b_k = 1 + (W−1)k, e_k = min(b_k + W − 1, |U|), and holds BOS + that span.
struct EvalWindow {
  int64_t begin = 0;
  int64_t end = 0;
};
std::vector<EvalWindow> eval_windows(int64_t stream_size, int seq_len);

struct EvalResult {
  double nll = 0;          // total negative log-likelihood (nats)
  int64_t tokens = 0;      // predicted tokens
  int64_t chunks = 0;      // windows evaluated
  double ppl = 0;          // exp(nll / tokens)
  bool has_ref = false;
  double kl = 0;           // mean KL(ref ‖ model) per predicted token
  double top1 = 0;         // fraction of positions with equal argmax
};

struct EvalOptions {
  int seq_len = 256;       // W, capped by the model's context
  int64_t max_windows = 0; // 0: all
  int bos_id = 1;
};

// Evaluates `model` (every layer, embedding and head loaded) on the stream U; `ref`
// (optional) is a second model over the same vocabulary.
EvalResult evaluate(const ModelWeights& model, const std::vector<int32_t>& stream, const EvalOptions& options,
                    const ModelWeights* ref = nullptr);

// log-softmax of one row in double precision.
void log_softmax_row(const float* logits, int64_t n, double* out);
// KL(p ‖ q) = Σ p (log p − log q) from two rows of log-probabilities.
double kl_divergence(const double* log_p, const double* log_q, int64_t n);

}  // namespace shardq
