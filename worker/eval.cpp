// Perplexity / KL / top-1 evaluation; see eval.hpp.
#include "worker/eval.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "common/error.hpp"
#include "worker/forward.hpp"

namespace shardq {

namespace {

std::string_view strip(std::string_view s) {
  constexpr std::string_view ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// Logits of a batch cost n_seq·W·vocab floats; keep a batch near 4096 tokens and its logits
// under 256 MB so a 128k vocabulary still fits.
int windows_per_batch(int seq_len, int vocab) {
  const int64_t by_tokens = std::max<int64_t>(1, 4096 / seq_len);
  const int64_t by_memory = std::max<int64_t>(1, (int64_t{1} << 26) / (static_cast<int64_t>(seq_len) * vocab));
  return static_cast<int>(std::min(by_tokens, by_memory));
}

}  // namespace

std::vector<int32_t> document_stream(const Tokenizer& tokenizer, std::string_view text, std::string_view separator) {
  std::vector<int32_t> stream;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t next = separator.empty() ? std::string_view::npos : text.find(separator, pos);
    if (next == std::string_view::npos) next = text.size();
    const std::string_view doc = strip(text.substr(pos, next - pos));
    if (!doc.empty()) {
      const std::vector<int32_t> ids = tokenizer.encode(doc, true);
      stream.insert(stream.end(), ids.begin(), ids.end());
    }
    pos = next + std::max<size_t>(separator.size(), 1);
  }
  return stream;
}

std::vector<EvalWindow> eval_windows(int64_t stream_size, int seq_len) {
  if (seq_len < 2) throw spec_error("seq_len", fmt::format("must be at least 2 (got {})", seq_len));
  std::vector<EvalWindow> windows;
  for (int64_t b = 1; b < stream_size; b += seq_len - 1) windows.push_back({b, std::min<int64_t>(b + seq_len - 1, stream_size)});
  return windows;
}

void log_softmax_row(const float* logits, int64_t n, double* out) {
  double max_v = logits[0];
  for (int64_t j = 1; j < n; ++j) max_v = std::max(max_v, static_cast<double>(logits[j]));
  double sum = 0;
  for (int64_t j = 0; j < n; ++j) sum += std::exp(static_cast<double>(logits[j]) - max_v);
  const double log_z = max_v + std::log(sum);
  for (int64_t j = 0; j < n; ++j) out[j] = static_cast<double>(logits[j]) - log_z;
}

double kl_divergence(const double* log_p, const double* log_q, int64_t n) {
  double kl = 0;
  for (int64_t j = 0; j < n; ++j) kl += std::exp(log_p[j]) * (log_p[j] - log_q[j]);
  return kl;
}

EvalResult evaluate(const ModelWeights& model, const std::vector<int32_t>& stream, const EvalOptions& opt,
                    const ModelWeights* ref) {
  const int vocab = model.config.vocab_size;
  if (ref && ref->config.vocab_size != vocab)
    throw spec_error("ref", fmt::format("the reference model's vocabulary ({}) differs from the model's ({})",
                                        ref->config.vocab_size, vocab));
  const int seq_len = std::min(opt.seq_len, model.config.max_position_embeddings);
  std::vector<EvalWindow> windows = eval_windows(static_cast<int64_t>(stream.size()), seq_len);
  if (opt.max_windows > 0 && static_cast<int64_t>(windows.size()) > opt.max_windows) windows.resize(opt.max_windows);

  EvalResult r;
  r.has_ref = ref != nullptr;
  double kl_sum = 0;
  int64_t top1_hits = 0;
  std::vector<double> lp(vocab), lp_ref(vocab);
  const int batch = windows_per_batch(seq_len, vocab);
  for (size_t w0 = 0; w0 < windows.size();) {
    // Windows of one length go together; only the last can be shorter.
    const int len = static_cast<int>(windows[w0].end - windows[w0].begin) + 1;
    size_t w1 = w0;
    while (w1 < windows.size() && w1 - w0 < static_cast<size_t>(batch) &&
           windows[w1].end - windows[w1].begin + 1 == len)
      ++w1;
    const int n_seq = static_cast<int>(w1 - w0);
    std::vector<int32_t> tokens;
    tokens.reserve(static_cast<size_t>(n_seq) * len);
    for (size_t w = w0; w < w1; ++w) {
      tokens.push_back(opt.bos_id);
      tokens.insert(tokens.end(), stream.begin() + windows[w].begin, stream.begin() + windows[w].end);
    }
    const Tensor logits = model_forward(model, tokens, n_seq, len);
    Tensor ref_logits;
    if (ref) ref_logits = model_forward(*ref, tokens, n_seq, len);
    for (int s = 0; s < n_seq; ++s) {
      for (int i = 0; i + 1 < len; ++i) {
        const int64_t row = static_cast<int64_t>(s) * len + i;
        const int32_t target = tokens[row + 1];
        const float* lg = logits.ptr() + row * vocab;
        log_softmax_row(lg, vocab, lp.data());
        r.nll -= lp[target];
        if (ref) {
          const float* rl = ref_logits.ptr() + row * vocab;
          log_softmax_row(rl, vocab, lp_ref.data());
          kl_sum += kl_divergence(lp_ref.data(), lp.data(), vocab);
          top1_hits += std::max_element(lg, lg + vocab) - lg == std::max_element(rl, rl + vocab) - rl;
        }
      }
      r.tokens += len - 1;
    }
    r.chunks += n_seq;
    w0 = w1;
  }
  r.ppl = r.tokens > 0 ? std::exp(r.nll / static_cast<double>(r.tokens)) : 0.0;
  if (ref && r.tokens > 0) {
    r.kl = kl_sum / static_cast<double>(r.tokens);
    r.top1 = static_cast<double>(top1_hits) / static_cast<double>(r.tokens);
  }
  return r;
}

}  // namespace shardq
