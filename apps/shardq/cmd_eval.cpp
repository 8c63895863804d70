// `shardq eval --model DIR|CKPT --text FILE [--ref DIR] [--seq-len N] [--separator S]
// [--max-windows N] [--json]`: perplexity by the protocol of DESIGN.md (worker/eval.hpp), and
// with --ref the mean KL(ref ‖ model) and top-1 agreement against a reference model.
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/shardq/command.hpp"
#include "common/error.hpp"
#include "common/log.hpp"
#include "common/tokenizer.hpp"
#include "worker/eval.hpp"
#include "worker/llama_weights.hpp"

namespace shardq::app {
namespace {

struct EvalArgs {
  std::string model;
  std::string text;
  std::string ref;
  int seq_len = 256;
  std::string separator = "<|endoftext|>";
  int64_t max_windows = 0;
  bool json = false;
};

void run_eval(const EvalArgs& a) {
  const ModelWeights model = model_weights_load(a.model);
  const std::unique_ptr<Tokenizer> tokenizer = tokenizer_load(model_tokenizer_dir(a.model), model.config.vocab_size);
  const std::vector<int32_t> stream = document_stream(*tokenizer, text_file_read(a.text, "text file"), a.separator);
  if (stream.size() < 2) throw spec_error("text", fmt::format("'{}' holds no tokens to predict", a.text));
  std::unique_ptr<ModelWeights> ref;
  if (!a.ref.empty()) ref = std::make_unique<ModelWeights>(model_weights_load(a.ref));
  EvalOptions opt;
  opt.seq_len = a.seq_len;
  opt.max_windows = a.max_windows;
  opt.bos_id = tokenizer->bos_id();
  const EvalResult r = evaluate(model, stream, opt, ref.get());
  if (a.json) {
    nlohmann::json j{{"ppl", r.ppl}, {"nll", r.nll}, {"tokens", r.tokens}, {"chunks", r.chunks}};
    if (r.has_ref) {
      j["kl"] = r.kl;
      j["top1"] = r.top1;
    }
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("ppl %.6f  nll %.6f  tokens %lld  chunks %lld\n", r.ppl, r.nll, static_cast<long long>(r.tokens),
                static_cast<long long>(r.chunks));
    if (r.has_ref) std::printf("kl %.6g  top1 %.6f\n", r.kl, r.top1);
  }
}

void setup_eval(CLI::App& root) {
  auto args = std::make_shared<EvalArgs>();
  auto* cmd = root.add_subcommand("eval", "Perplexity of a model or checkpoint on a text (and KL / top-1 against --ref)");
  cmd->add_option("--model", args->model, "Hugging Face model directory or shardq checkpoint")->required();
  cmd->add_option("--text", args->text, "UTF-8 text, documents separated by --separator")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--ref", args->ref, "reference model (same vocabulary) for KL and top-1 agreement");
  cmd->add_option("--seq-len", args->seq_len, "window length W in tokens (capped by the model's context)")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--separator", args->separator, "document separator")->capture_default_str();
  cmd->add_option("--max-windows", args->max_windows, "evaluate only the first N windows (0: all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--json", args->json, "print one JSON object {ppl, nll, tokens, chunks[, kl, top1]}");
  cmd->callback([args] { run_eval(*args); });
}

}  // namespace

SHARDQ_REGISTER_COMMAND(setup_eval);

}  // namespace shardq::app
