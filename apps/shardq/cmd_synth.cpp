// `shardq synth`: writes a deterministic synthetic LlamaForCausalLM (config.json + sharded
// safetensors + index) streaming, so multi-billion-parameter shapes need little memory.
// The value model is in common/synth_model.hpp. No tokenizer is written: drive such models
// with token files (calibration.format "tokens") or a byte-level tokenizer.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "apps/shardq/command.hpp"
#include "common/synth_model.hpp"

namespace shardq::app {
namespace {

struct SynthArgs {
  SynthOptions options;
  std::string dtype_name = "f16";
  std::string output;
  bool json = false;
};

void setup_synth(CLI::App& root) {
  auto args = std::make_shared<SynthArgs>();
  SynthOptions& o = args->options;
  auto* cmd = root.add_subcommand("synth", "Write a deterministic synthetic Llama model (no tokenizer)");
  cmd->add_option("--layers", o.layers, "decoder layers")->required();
  cmd->add_option("--hidden", o.hidden, "hidden size")->required();
  cmd->add_option("--intermediate", o.intermediate, "MLP intermediate size")->required();
  cmd->add_option("--heads", o.heads, "attention heads")->required();
  cmd->add_option("--kv-heads", o.kv_heads, "key/value heads (GQA)")->required();
  cmd->add_option("--vocab", o.vocab, "vocabulary size")->required();
  cmd->add_option("--seed", o.seed, "RNG seed: same seed, same bytes")->capture_default_str();
  cmd->add_option("--context", o.context, "max_position_embeddings")->capture_default_str();
  cmd->add_option("--dtype", args->dtype_name, "stored dtype")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--max-shard-bytes", o.max_shard_bytes, "largest shard file (bytes; KB/MB/GB suffixes are 1024-based)")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  cmd->add_option("--output", args->output, "output directory (new or empty)")->required();
  cmd->add_flag("--json", args->json, "print a JSON summary");
  cmd->callback([args] {
    const std::string& d = args->dtype_name;
    args->options.type = d == "f32" ? dtype::f32 : d == "bf16" ? dtype::bf16 : dtype::f16;
    const auto start = std::chrono::steady_clock::now();
    const SynthSummary s = synth_model_write(args->options, args->output);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (args->json) {
      const nlohmann::json j = {{"output", args->output}, {"params", s.params}, {"bytes", s.bytes},
                                {"files", s.files}, {"seconds", seconds}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("wrote %lld parameters (%llu bytes, %zu file%s) to %s in %.1f s\n",
                  static_cast<long long>(s.params), static_cast<unsigned long long>(s.bytes), s.files.size(),
                  s.files.size() == 1 ? "" : "s", args->output.c_str(), seconds);
    }
  });
}

}  // namespace

SHARDQ_REGISTER_COMMAND(setup_synth);

}  // namespace shardq::app
