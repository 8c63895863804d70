// `shardq inspect CKPT [--json]`: a checkpoint's precision manifest as a table (one row per
// linear: layer, module, bits, method, group, rel_error, bytes) with totals, or with --json
// the manifest itself. CKPT is the checkpoint directory (manifest.json), its model.h5 (the
// manifest copy inside), or a manifest.json. The manifest is validated before anything is
// printed, so a bad checkpoint gives one error line, empty stdout and exit status 1.
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/shardq/command.hpp"
#include "common/checkpoint.hpp"
#include "common/error.hpp"
#include "common/manifest.hpp"

namespace shardq::app {
namespace {

std::string format_error(double e) { return std::isnan(e) ? "-" : fmt::format("{:.3e}", e); }

std::string inspect_report(const std::filesystem::path& path, bool as_json) {
  if (!std::filesystem::exists(path)) throw io_error(fmt::format("checkpoint '{}' does not exist", path.string()));
  nlohmann::json j;
  std::string source;
  if (!std::filesystem::is_directory(path) && path.extension() == ".h5") {
    source = "'" + path.string() + "' attribute manifest";
    const std::string text = CheckpointReader(path).manifest_json();
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      throw io_error(fmt::format("{}: not valid JSON: {}", source, e.what()));
    }
  } else {
    j = manifest_read_json(path, &source);
  }
  const Manifest m = manifest_from_json(j, source);
  if (as_json) return j.dump(2) + "\n";

  const ManifestSummary& s = m.summary;
  std::string out;
  out += fmt::format("checkpoint    {}\n", path.string());
  out += fmt::format("model         {} ({})\n", m.model.path, m.model.architecture);
  out += fmt::format("shards        {}   layers {}   modules {}\n", m.shards.size(), m.layers.size(), m.modules.size());
  std::size_t width = 6;
  for (const ManifestModule& mod : m.modules) width = std::max(width, mod.name.size());
  out += fmt::format("\n{:>5}  {:<{}}  {:>4}  {:<6}  {:>5}  {:>10}  {:>12}\n", "layer", "module", width, "bits", "method",
                     "group", "rel_error", "bytes");
  int64_t params = 0;
  for (const ManifestModule& mod : m.modules) {
    out += fmt::format("{:>5}  {:<{}}  {:>4}  {:<6}  {:>5}  {:>10}  {:>12}\n", mod.layer, mod.name, width, mod.bits,
                       mod.method, mod.bits >= 16 ? "-" : std::to_string(mod.group_size), format_error(mod.rel_error),
                       mod.bytes);
    params += mod.params();
  }
  out += fmt::format("\nlinear params {} ({} quantized)\n", params, s.quantized_params);
  out += fmt::format("avg bits      {:.4f} (effective, with scales/zeros/g_idx: {:.4f})\n", s.avg_bits,
                     s.avg_bits_effective);
  out += fmt::format("bytes         {} (original {}, compression {:.2f}x)\n", s.bytes, s.original_bytes, s.compression);
  if (!s.phase_seconds.empty()) {
    out += "phase seconds";
    for (const auto& [phase, seconds] : s.phase_seconds) out += fmt::format("  {} {:.1f}", phase, seconds);
    out += "\n";
  }
  return out;
}

void setup_inspect(CLI::App& root) {
  auto path = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  auto* cmd = root.add_subcommand("inspect", "Show a checkpoint's precision manifest (bits, method, error per module)");
  cmd->add_option("checkpoint", *path, "checkpoint directory, its model.h5, or a manifest.json")->required();
  cmd->add_flag("--json", *as_json, "print the manifest JSON");
  cmd->callback([path, as_json] {
    const std::string report = inspect_report(*path, *as_json);
    std::fwrite(report.data(), 1, report.size(), stdout);
  });
}

}  // namespace

SHARDQ_REGISTER_COMMAND(setup_inspect);

}  // namespace shardq::app
