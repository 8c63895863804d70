// `shardq inspect CKPT [--json]`: a checkpoint's precision manifest as a table (one row per
// linear: layer, module, bits, method, group, rel_error, bytes) with totals, or with --json
// the manifest itself. CKPT is the checkpoint directory (manifest.json), its model.h5 (the
// manifest copy inside), or a manifest.json. The manifest is validated before anything is
// printed, so a bad checkpoint gives one error line, empty stdout and exit status 1.
//
// `shardq inspect --verify CKPT [--json]`: re-hashes every shard the journal or the manifest
// records (common/checkpoint_verify.hpp) and prints one line per shard (ok / missing / bad)
// and the layers missing or damaged; exit status 1 unless the checkpoint is complete and
// every checksum matches. Works on an unfinished job's directory too.
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "apps/shardq/command.hpp"
#include "common/checkpoint.hpp"
#include "common/checkpoint_verify.hpp"
#include "common/error.hpp"
#include "common/json_text.hpp"
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
    std::string why;
    j = parse_json_text(text, why);
    if (j.is_discarded()) throw io_error(fmt::format("{}: not valid JSON: {}", source, why));
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

// The checkpoint directory of CKPT (the directory, its model.h5 or its manifest.json).
std::filesystem::path checkpoint_dir_of(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) throw io_error(fmt::format("checkpoint '{}' does not exist", path.string()));
  if (std::filesystem::is_directory(path)) return path;
  return path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
}

std::string layer_list(const std::vector<int>& layers) {
  return layers.empty() ? "none" : fmt::format("{}", fmt::join(layers, ","));
}

// Prints the report; throws (exit status 1) unless everything verified.
void verify_report(const std::filesystem::path& path, bool as_json) {
  const std::filesystem::path dir = checkpoint_dir_of(path);
  const VerifyReport r = checkpoint_verify(dir);
  std::string out;
  if (as_json) {
    out = r.to_json().dump(2) + "\n";
  } else {
    out += fmt::format("checkpoint  {}  ({})\n", dir.string(),
                       r.has_manifest ? "complete" : "unfinished: no manifest.json");
    int counts[3] = {0, 0, 0};
    for (const ShardCheck& c : r.shards) {
      ++counts[static_cast<int>(c.state)];
      const std::string what = c.layers.empty() ? "embedding/norm/head" : "layer " + layer_list(c.layers);
      out += fmt::format("  {:<16} {:<22} {}{}\n", c.file.empty() ? "-" : c.file, what, shard_state_name(c.state),
                         c.detail.empty() ? "" : ": " + c.detail);
    }
    out += fmt::format("{} shards: {} ok, {} missing, {} bad; layers missing: {}; layers damaged: {}\n", r.shards.size(),
                       counts[0], counts[1], counts[2], layer_list(r.layers_missing), layer_list(r.layers_bad));
    if (r.has_manifest) out += fmt::format("{}: {}\n", checkpoint_master_name, r.master_problem.empty() ? "ok" : r.master_problem);
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  if (!r.ok()) {
    const bool only_master = r.layers_missing.empty() && r.layers_bad.empty() && !r.master_problem.empty();
    throw error(fmt::format("checkpoint '{}' failed verification: {}", dir.string(),
                            only_master ? fmt::format("{}: {}", checkpoint_master_name, r.master_problem)
                                      : fmt::format("layers missing {}, layers damaged {}{}", layer_list(r.layers_missing),
                                                    layer_list(r.layers_bad),
                                                    r.has_journal ? " (quantize --resume redoes them)" : "")));
  }
  if (!r.has_manifest) throw error(fmt::format("checkpoint '{}' is unfinished (no manifest.json)", dir.string()));
}

void setup_inspect(CLI::App& root) {
  auto path = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  auto* cmd = root.add_subcommand("inspect", "Show a checkpoint's precision manifest (bits, method, error per module)");
  cmd->add_option("checkpoint", *path, "checkpoint directory, its model.h5, or a manifest.json")->required();
  auto verify = std::make_shared<bool>(false);
  cmd->add_flag("--json", *as_json, "print the manifest JSON (with --verify: the verification report)");
  cmd->add_flag("--verify", *verify, "re-hash every shard against the journal/manifest; exit 1 on a missing or bad layer");
  cmd->callback([path, as_json, verify] {
    if (*verify) return verify_report(*path, *as_json);
    const std::string report = inspect_report(*path, *as_json);
    std::fwrite(report.data(), 1, report.size(), stdout);
  });
}

}  // namespace

SHARDQ_REGISTER_COMMAND(setup_inspect);

}  // namespace shardq::app
