// `shardq info MODEL_DIR [--json]`: architecture, the config values that matter, totals and
// a table of tensors (name, dtype, shape, shard file), from config.json and the safetensors
// headers alone (no tensor data is read). The whole report is built before anything is
// printed, so an error leaves stdout empty.
#include <cctype>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/shardq/command.hpp"
#include "common/model_config.hpp"
#include "common/safetensors.hpp"

namespace shardq::app {
namespace {

// "layers.2." before "layers.10.": digit runs compare by value.
bool natural_less(const std::string& a, const std::string& b) {
  std::size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      std::size_t ie = i, je = j;
      while (ie < a.size() && std::isdigit(static_cast<unsigned char>(a[ie]))) ++ie;
      while (je < b.size() && std::isdigit(static_cast<unsigned char>(b[je]))) ++je;
      const std::string_view da = std::string_view(a).substr(i, ie - i), db = std::string_view(b).substr(j, je - j);
      const auto strip = [](std::string_view d) { return d.substr(std::min(d.find_first_not_of('0'), d.size())); };
      const std::string_view sa = strip(da), sb = strip(db);
      if (sa.size() != sb.size()) return sa.size() < sb.size();
      if (sa != sb) return sa < sb;
      i = ie;
      j = je;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

std::string info_report(const std::string& dir, bool as_json) {
  const ModelConfig c = model_config_load(dir);
  const SafetensorsModel model(dir);
  std::vector<std::string> names = model.tensor_names();
  std::sort(names.begin(), names.end(), natural_less);
  int64_t params = 0;
  uint64_t bytes = 0;
  for (const std::string& n : names) {
    const TensorInfo& t = model.info(n);
    params += t.numel();
    bytes += t.end - t.begin;
  }

  if (as_json) {
    nlohmann::json tensors = nlohmann::json::array();
    for (const std::string& n : names) {
      const TensorInfo& t = model.info(n);
      tensors.push_back({{"name", n}, {"dtype", dtype_name(t.type)}, {"shape", t.shape}, {"file", t.file}});
    }
    const nlohmann::json j = {{"path", dir},
                              {"architecture", c.architecture},
                              {"model_type", c.model_type},
                              {"config", model_config_to_json(c)},
                              {"layer_linear_params", c.layer_linear_params()},
                              {"params", params},
                              {"bytes", bytes},
                              {"files", model.files()},
                              {"tensors", tensors}};
    return j.dump(2) + "\n";
  }
  std::string out;
  out += fmt::format("model         {}\n", dir);
  out += fmt::format("architecture  {} ({})\n", c.architecture, c.model_type);
  out += fmt::format("layers        {}   hidden {}   intermediate {}   vocab {}   context {}\n", c.num_layers,
                     c.hidden_size, c.intermediate_size, c.vocab_size, c.max_position_embeddings);
  out += fmt::format("attention     {} heads, {} kv heads, head_dim {}, q/k/v bias {}\n", c.num_heads, c.num_kv_heads,
                     c.head_dim, c.attention_bias);
  out += fmt::format("norm / rope   rms_norm_eps {}   rope_theta {}   tie_word_embeddings {}\n", c.rms_norm_eps,
                     c.rope_theta, c.tie_word_embeddings);
  out += fmt::format("tokens        bos {}   eos {}   torch_dtype {}\n", c.bos_token_id, c.eos_token_id, c.torch_dtype);
  out += fmt::format("totals        {} parameters ({:.3f} B), {} bytes ({:.2f} GiB) in {} file(s)\n", params,
                     static_cast<double>(params) / 1e9, bytes, static_cast<double>(bytes) / (1ull << 30),
                     model.files().size());
  std::size_t width = 4;
  for (const std::string& n : names) width = std::max(width, n.size());
  out += fmt::format("\n{:<{}}  {:<5}  {:<16}  {}\n", "name", width, "dtype", "shape", "file");
  for (const std::string& n : names) {
    const TensorInfo& t = model.info(n);
    out += fmt::format("{:<{}}  {:<5}  {:<16}  {}\n", n, width, dtype_name(t.type), shape_string(t.shape), t.file);
  }
  return out;
}

void setup_info(CLI::App& root) {
  auto dir = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  auto* cmd = root.add_subcommand("info", "Show a model's config and tensor table (headers only)");
  cmd->add_option("model", *dir, "model directory (config.json + safetensors)")->required();
  cmd->add_flag("--json", *as_json, "print one JSON object");
  cmd->callback([dir, as_json] {
    const std::string report = info_report(*dir, *as_json);
    std::fwrite(report.data(), 1, report.size(), stdout);
  });
}

}  // namespace

SHARDQ_REGISTER_COMMAND(setup_info);

}  // namespace shardq::app
