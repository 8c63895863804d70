// `shardq convert llama2c MODEL.bin --tokenizer TOK --output DIR`: a llama2.c legacy
// checkpoint to a Hugging Face Llama directory (common/llama2c.hpp does the work).
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "apps/shardq/command.hpp"
#include "common/dtype.hpp"
#include "common/llama2c.hpp"
#include "common/log.hpp"

namespace shardq::app {
namespace {

struct ConvertLlama2cArgs {
  Llama2cConvertOptions options;
  std::string dtype_name = "f32";
};

void setup_convert(CLI::App& root) {
  auto* convert = root.add_subcommand("convert", "Convert a checkpoint of another format to a Hugging Face directory");
  convert->require_subcommand(1);

  auto args = std::make_shared<ConvertLlama2cArgs>();
  auto* llama2c = convert->add_subcommand(
      "llama2c", "llama2.c legacy checkpoint (run.c format) -> config.json, model.safetensors, tokenizer");
  llama2c->add_option("model", args->options.model_bin, "llama2.c checkpoint (.bin)")->required()->check(CLI::ExistingFile);
  llama2c->add_option("--tokenizer", args->options.tokenizer,
                      "llama2.c tokenizer.bin, or SentencePiece tokenizer.model (by its .model extension)")
      ->required()
      ->check(CLI::ExistingFile);
  llama2c->add_option("--output", args->options.output, "output directory")->required();
  llama2c->add_option("--dtype", args->dtype_name, "stored dtype of the weights")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}))
      ->capture_default_str();
  llama2c->add_flag("--force", args->options.force, "write into an existing non-empty directory");
  llama2c->callback([args] {
    const std::string& d = args->dtype_name;
    args->options.type = d == "f16" ? dtype::f16 : d == "bf16" ? dtype::bf16 : dtype::f32;
    llama2c_convert(args->options);
    spdlog::info("converted '{}' to '{}'", args->options.model_bin.string(), args->options.output.string());
  });
}

}  // namespace

SHARDQ_REGISTER_COMMAND(setup_convert);

}  // namespace shardq::app
