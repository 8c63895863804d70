// `shardq generate --model DIR|CKPT --prompt "..." [-n N] [--temperature T] [--top-p P]
// [--seed S] [--json]`: text generation as llama2.c run.c prints it — the prompt pieces, then
// the generated pieces, then "\n". -n counts every step including the prompt tokens (run.c's
// `steps`; 0 or more than the context means the context). Generation stops early at BOS (run.c's
// convention for the end of a sequence). Temperature 0 is greedy (argmax); otherwise run.c's
// sampler: logits / T, softmax, top-p (nucleus) sampling when 0 < p < 1, with run.c's xorshift
// generator seeded by --seed, so a seed reproduces run.c's `-s` output for the same model.
#include <algorithm>
#include <cmath>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/shardq/command.hpp"
#include "common/error.hpp"
#include "common/log.hpp"
#include "common/tokenizer.hpp"
#include "kernels/cpu/forward_ops.hpp"
#include "worker/forward.hpp"
#include "worker/llama_weights.hpp"

namespace shardq::app {
namespace {

struct GenerateArgs {
  std::string model;
  std::string prompt;
  int steps = 256;
  float temperature = 0.0f;
  float top_p = 0.9f;
  uint64_t seed = 42;
  bool json = false;
};

// run.c's sampler (karpathy/llama2.c run.c: random_u32, sample_mult, sample_topp).
class Sampler {
 public:
  Sampler(float temperature, float top_p, uint64_t seed) : temperature_(temperature), top_p_(top_p), state_(seed) {}

  int32_t sample(std::span<const float> logits_in) {
    const auto argmax = [&] {
      return static_cast<int32_t>(std::max_element(logits_in.begin(), logits_in.end()) - logits_in.begin());
    };
    if (temperature_ == 0.0f) return argmax();
    std::vector<float> p(logits_in.begin(), logits_in.end());
    for (float& x : p) x /= temperature_;
    // A temperature so small that logits / T overflows is greedy decoding in the limit (the
    // softmax of inf is NaN, and the nucleus of NaNs is empty).
    if (!std::isfinite(*std::max_element(p.begin(), p.end())) || !std::isfinite(*std::min_element(p.begin(), p.end())))
      return argmax();
    cpu::softmax_row(p.data(), static_cast<int64_t>(p.size()));
    const float coin = random_f32();
    return (top_p_ <= 0.0f || top_p_ >= 1.0f) ? sample_mult(p, coin) : sample_topp(p, coin);
  }

 private:
  uint32_t random_u32() {
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return static_cast<uint32_t>((state_ * 0x2545F4914F6CDD1Dull) >> 32);
  }
  float random_f32() { return static_cast<float>(random_u32() >> 8) / 16777216.0f; }

  static int32_t sample_mult(const std::vector<float>& p, float coin) {
    float cdf = 0.0f;
    for (size_t i = 0; i < p.size(); ++i) {
      cdf += p[i];
      if (coin < cdf) return static_cast<int32_t>(i);
    }
    return static_cast<int32_t>(p.size() - 1);
  }

  int32_t sample_topp(const std::vector<float>& p, float coin) const {
    // Tokens below (1 - top_p) / (n - 1) cannot be part of the nucleus: run.c drops them first.
    const float cutoff = (1.0f - top_p_) / static_cast<float>(p.size() - 1);
    std::vector<std::pair<float, int32_t>> cand;
    for (size_t i = 0; i < p.size(); ++i)
      if (p[i] >= cutoff) cand.emplace_back(p[i], static_cast<int32_t>(i));
    if (cand.empty()) return static_cast<int32_t>(std::max_element(p.begin(), p.end()) - p.begin());
    std::stable_sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    float cumulative = 0.0f;
    size_t last = cand.size() - 1;
    for (size_t i = 0; i < cand.size(); ++i) {
      cumulative += cand[i].first;
      if (cumulative > top_p_) {
        last = i;
        break;
      }
    }
    const float r = coin * cumulative;
    float cdf = 0.0f;
    for (size_t i = 0; i <= last; ++i) {
      cdf += cand[i].first;
      if (r < cdf) return cand[i].second;
    }
    return cand[last].second;
  }

  float temperature_, top_p_;
  uint64_t state_;
};

// run.c safe_printf: a single-byte piece is printed only when printable or whitespace (raw
// bytes of a split UTF-8 character are printed by the pieces that carry them).
bool printable_piece(const std::string& piece) {
  if (piece.size() != 1) return !piece.empty();
  const auto byte = static_cast<unsigned char>(piece[0]);
  return std::isprint(byte) || std::isspace(byte);
}

void run_generate(const GenerateArgs& a) {
  const ModelWeights model = model_weights_load(a.model);
  const std::unique_ptr<Tokenizer> tokenizer = tokenizer_load(model_tokenizer_dir(a.model), model.config.vocab_size);
  const int context = model.config.max_position_embeddings;
  const int steps = (a.steps <= 0 || a.steps > context) ? context : a.steps;
  const std::vector<int32_t> prompt = tokenizer->encode(a.prompt, true);
  if (prompt.empty()) throw spec_error("prompt", "encodes to no tokens");

  Decoder decoder(model, steps);
  Sampler sampler(a.temperature, a.top_p, a.seed);
  std::vector<int32_t> ids{prompt[0]};
  std::string text;
  int32_t token = prompt[0];
  const auto start = std::chrono::steady_clock::now();
  for (int pos = 0; pos < steps; ++pos) {
    const std::span<const float> logits = decoder.step(token);
    const int32_t next = pos + 1 < static_cast<int>(prompt.size()) ? prompt[pos + 1] : sampler.sample(logits);
    if (next == tokenizer->bos_id()) break;
    const std::string piece = tokenizer->decode_piece(token, next);
    if (printable_piece(piece)) {
      text += piece;
      if (!a.json) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      }
    }
    ids.push_back(next);
    token = next;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double tok_s = ids.size() > 1 ? static_cast<double>(ids.size() - 1) / seconds : 0.0;
  if (a.json) {
    std::printf("%s\n", nlohmann::json{{"text", text}, {"ids", ids}, {"steps", ids.size() - 1},
                                       {"prompt_tokens", prompt.size()}, {"tokens_per_s", tok_s}}
                            .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                            .c_str());
  } else {
    std::printf("\n");
    spdlog::debug("achieved tok/s: {:.1f}", tok_s);
  }
}

void setup_generate(CLI::App& root) {
  auto args = std::make_shared<GenerateArgs>();
  auto* cmd = root.add_subcommand("generate", "Generate text with a model or checkpoint (llama2.c run.c conventions)");
  cmd->add_option("--model", args->model, "Hugging Face model directory or shardq checkpoint")->required();
  cmd->add_option("--prompt,-i", args->prompt, "prompt text (BOS is prepended)")->capture_default_str();
  cmd->add_option("-n,--steps", args->steps, "total steps including the prompt tokens (0: the context length)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  // CLI11's NonNegativeNumber and Range let NaN through (every comparison with it is false).
  const auto finite_in = [](double lo, double hi, const char* range) {
    return CLI::Validator(
        [lo, hi, range](const std::string& text) {
          double x = 0;
          try {
            x = std::stod(text);
          } catch (const std::exception&) {
            return "must be a number, got " + text;
          }
          return std::isfinite(x) && x >= lo && x <= hi ? std::string() : fmt::format("must be {}, got {}", range, text);
        },
        range);
  };
  cmd->add_option("--temperature,-t", args->temperature, "0: greedy; otherwise softmax(logits / T) sampling")
      ->capture_default_str()
      ->check(finite_in(0.0, 1e30, "a finite number >= 0"));
  cmd->add_option("--top-p,-p", args->top_p, "nucleus sampling threshold (0 or 1: off)")
      ->capture_default_str()
      ->check(finite_in(0.0, 1.0, "in [0, 1]"));
  cmd->add_option("--seed,-s", args->seed, "seed of run.c's xorshift sampler")->capture_default_str();
  cmd->add_flag("--json", args->json, "print one JSON object {text, ids, steps, prompt_tokens, tokens_per_s}");
  cmd->callback([args] { run_generate(*args); });
}

}  // namespace

SHARDQ_REGISTER_COMMAND(setup_generate);

}  // namespace shardq::app
