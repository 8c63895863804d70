#include "coordinator/resume.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <optional>

#include "common/checkpoint.hpp"
#include "common/checkpoint_verify.hpp"
#include "common/error.hpp"
#include "common/manifest.hpp"
#include "common/output_lock.hpp"
#include "common/safetensors.hpp"
#include "common/sha256.hpp"
#include "common/thread_pool.hpp"
#include "coordinator/hidden_snapshot.hpp"
#include "coordinator/shard_output.hpp"

#ifndef SHARDQ_VERSION
#define SHARDQ_VERSION "dev"
#endif

namespace shardq {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The spec fields that decide the result (see resume.hpp): all but where things are and how
// the ranks talk.
json result_spec(const JobSpec& s) {
  json j = job_spec_to_json(s);
  for (const char* key : {"model", "output", "comm", "resume"}) j.erase(key);
  j["calibration"].erase("path");
  return j;
}

// The first field where two spec objects differ, as "a.b", with both values.
bool first_difference(const json& was, const json& now, const std::string& prefix, std::string& field, std::string& detail) {
  if (was.is_object() && now.is_object()) {
    for (const auto& [key, value] : was.items()) {
      const std::string path = prefix.empty() ? key : prefix + "." + key;
      if (!now.contains(key)) {
        field = path;
        detail = fmt::format("{} in the interrupted job, absent now", value.dump());
        return true;
      }
      if (first_difference(value, now.at(key), path, field, detail)) return true;
    }
    for (const auto& [key, value] : now.items()) {
      if (!was.contains(key)) {
        field = prefix.empty() ? key : prefix + "." + key;
        detail = fmt::format("absent in the interrupted job, {} now", value.dump());
        return true;
      }
    }
    return false;
  }
  if (was == now) return false;
  field = prefix;
  detail = fmt::format("{} in the interrupted job, {} now", was.dump(), now.dump());
  return true;
}

constexpr const char* start_over = "to start over instead, use --force without --resume";

void check_same_identity(const JobPlan& p, const json& was, const json& now) {
  const std::string out = p.spec.output;
  if (was.value("shardq", "") != now.value("shardq", ""))
    throw spec_error("resume", fmt::format("the checkpoint in '{}' was started by shardq {}, this is {}; {}", out,
                                           was.value("shardq", "?"), now.value("shardq", "?"), start_over));
  std::string field, detail;
  if (first_difference(was.at("spec"), now.at("spec"), "", field, detail))
    throw spec_error(field, fmt::format("differs from the job being resumed in '{}' ({}); {}", out, detail, start_over));
  const json& files_was = was.at("model_files");
  const json& files_now = now.at("model_files");
  for (const json& f : files_was) {
    const std::string name = f.at("name");
    const auto it = std::find_if(files_now.begin(), files_now.end(), [&](const json& g) { return g.at("name") == name; });
    if (it == files_now.end())
      throw spec_error("model", fmt::format("'{}' no longer has '{}', which the job being resumed in '{}' read; {}",
                                            p.spec.model, name, out, start_over));
    if (it->at("sha256") != f.at("sha256"))
      throw spec_error("model", fmt::format("'{}' in '{}' changed since the job in '{}' started (sha256 {} now, {} then); {}",
                                            name, p.spec.model, out, it->at("sha256").get<std::string>().substr(0, 16),
                                            f.at("sha256").get<std::string>().substr(0, 16), start_over));
  }
  if (files_now.size() != files_was.size())
    throw spec_error("model", fmt::format("'{}' has other files than when the job in '{}' started; {}", p.spec.model, out, start_over));
  if (was.at("calibration") != now.at("calibration")) {
    const bool file_changed = was["calibration"].value("file_sha256", "") != now["calibration"].value("file_sha256", "");
    throw spec_error("calibration.path",
                     fmt::format("'{}' {} since the job in '{}' started; {}", p.spec.calibration.path,
                                 file_changed ? "changed" : "gives other calibration tokens (tokenizer changed?)", out,
                                 start_over));
  }
  if (was.value("cuda_matmul", json()) != now.value("cuda_matmul", json()))
    throw spec_error("SHARDQ_CUDA_MATMUL", fmt::format("the GPU matmul precision differs from the job being resumed in '{}' "
                                                       "({} then, {} now); {}", out, was.value("cuda_matmul", json()).dump(),
                                                       now.value("cuda_matmul", json()).dump(), start_over));
  if (was.at("shard_layers") != now.at("shard_layers") || was.at("num_layers") != now.at("num_layers"))
    throw spec_error("resume", fmt::format("the shard layout of '{}' differs from this job's; {}", out, start_over));
}

void remove_owned(const fs::path& dir, const std::string& file) {
  if (file.empty() || file.find('/') != std::string::npos) return;
  std::error_code ec;
  fs::remove(dir / file, ec);
  io_check(!ec, "cannot remove '{}': {}", (dir / file).string(), ec.message());
}

}  // namespace

std::vector<std::string> collective_sha256(Comm& comm, const std::vector<fs::path>& root_paths) {
  std::string list;
  if (comm.is_root()) {
    json j = json::array();
    for (const fs::path& path : root_paths) j.push_back(path.string());
    list = j.dump();
  }
  comm.broadcast(list, 0);
  const auto paths = json::parse(list).get<std::vector<std::string>>();
  std::vector<fs::path> mine;
  for (size_t i = static_cast<size_t>(comm.rank()); i < paths.size(); i += static_cast<size_t>(comm.size()))
    mine.push_back(paths[i]);
  std::vector<std::string> digests(mine.size());
  parallel_for(static_cast<int>(mine.size()), [&](int i) {
    try {
      digests[static_cast<size_t>(i)] = sha256_file(mine[static_cast<size_t>(i)]);
    } catch (const std::exception&) {
      // "" marks a file this rank could not read; the caller names it.
    }
  });
  const auto parts = comm.gather(json(digests).dump(), 0);
  if (!comm.is_root()) return {};
  std::vector<std::string> out(paths.size());
  for (size_t r = 0; r < parts.size(); ++r) {
    const auto got = json::parse(parts[r]).get<std::vector<std::string>>();
    for (size_t k = 0; k < got.size(); ++k) out[r + k * parts.size()] = got[k];
  }
  return out;
}

std::vector<std::string> model_identity_files(const JobPlan& p) {
  std::vector<std::string> names{"config.json"};
  const SafetensorsModel model(p.spec.model);
  for (const std::string& f : model.files()) names.push_back(f);
  if (fs::exists(fs::path(p.spec.model) / "model.safetensors.index.json")) names.push_back("model.safetensors.index.json");
  return names;
}

json job_identity(const JobPlan& p, const std::vector<std::string>& model_digests) {
  const std::vector<std::string> names = model_identity_files(p);
  json files = json::array();
  for (size_t i = 0; i < names.size(); ++i) {
    if (model_digests.at(i).empty())
      throw io_error(fmt::format("cannot read '{}' to hash it", (fs::path(p.spec.model) / names[i]).string()));
    files.push_back({{"name", names[i]}, {"sha256", model_digests[i]}});
  }
  json calibration = json::object();
  if (!p.spec.calibration.path.empty()) {
    calibration["file_sha256"] = sha256_file(p.spec.calibration.path);
    calibration["tokens_sha256"] = sha256_hex(std::span(reinterpret_cast<const std::byte*>(p.windows.data()),
                                                        p.windows.size() * sizeof(int32_t)));
  }
  json identity{{"shardq", SHARDQ_VERSION},
          {"spec", result_spec(p.spec)},
          {"model_files", files},
          {"calibration", calibration},
          {"num_layers", p.config.num_layers},
          {"shard_layers", checkpoint_shard_layers(p.config)}};
  if (p.spec.device == "cuda")
    identity["cuda_matmul"] = {{"forward", p.cuda_matmul.forward}, {"hessian", p.cuda_matmul.hessian}};
  return identity;
}

void resume_check_target(const JobPlan& p) {
  if (p.spec.resume && !journal_exists(p.spec.output) && output_has_files(p.spec.output))
    throw spec_error("resume", fmt::format("'{}' has no {} to resume from (not a shardq job's output, or written "
                                           "before journals existed); {}", p.spec.output, journal_file_name, start_over));
}

std::optional<Journal> resume_open(const JobPlan& p) {
  if (!p.spec.resume) return std::nullopt;
  const fs::path dir = p.spec.output;
  if (!journal_exists(dir)) {
    resume_check_target(p);
    return std::nullopt;
  }
  Journal journal = journal_read(dir);
  check_same_identity(p, journal.identity, p.identity);
  const int n_shards = static_cast<int>(checkpoint_shard_layers(p.config).size());
  for (const auto& [index, entry] : journal.shards) {
    if (index < 0 || index >= n_shards)
      throw io_error(fmt::format("'{}': shard index {} out of range", (dir / journal_file_name).string(), index));
  }
  return journal;
}

std::vector<JournalShard> resume_commit_records(const JobPlan& p, const Journal& journal) {
  std::vector<JournalShard> out;
  const int n_shards = static_cast<int>(checkpoint_shard_layers(p.config).size());
  for (int index = 0; index < n_shards; ++index) {
    // A journalled shard is checked against its journal line only: a file that differs from
    // it may be a redo that was published, or damage, and only the redo would be adoptable.
    if (journal.shards.count(index)) continue;
    std::optional<JournalShard> s = commit_record_read(p.spec.output, checkpoint_shard_name(index), p.identity_sha256);
    if (s && s->index == index) out.push_back(std::move(*s));
  }
  return out;
}

void resume_decide(JobPlan& p, const Journal& journal, const std::vector<JournalShard>& records,
                   const std::vector<std::string>& shard_digests) {
  const fs::path dir = p.spec.output;
  const int n_shards = static_cast<int>(checkpoint_shard_layers(p.config).size());
  json bad = json::array();
  int reused = 0;
  size_t k = 0;
  for (const auto& [index, entry] : journal.shards) {
    const ShardCheck c = check_shard_digest(entry, shard_digests.at(k++));
    if (c.state == shard_state::ok) {
      p.committed[static_cast<size_t>(index)] = 1;
      ++reused;
    } else {
      bad.push_back(c.to_json());
    }
  }
  json adopted = json::array();
  for (const JournalShard& s : records) {
    if (shard_digests.at(k++) != s.sha256) continue;  // missing, or not the file recorded
    p.committed[static_cast<size_t>(s.index)] = 1;
    p.adopted.push_back(s);
    adopted.push_back(s.index);
    ++reused;
  }
  p.resumed = true;
  if (journal.measure) {
    p.scores = precision_scores_from_json(journal.measure->at("scores"));
    p.allocation = allocation_from_json(journal.measure->at("allocation"), p.config);
    p.measure_journalled = true;
  }
  // The sequential schedule starts from the latest intact snapshot of the hidden states at
  // or before the first missing layer (hidden_snapshot.hpp), else from the embedding.
  int first_missing = p.config.num_layers;
  for (int l = 0; l < p.config.num_layers; ++l) {
    if (!p.committed[static_cast<size_t>(l)]) {
      first_missing = l;
      break;
    }
  }
  if (p.spec.schedule == "sequential" && !p.windows.empty()) {
    for (auto it = journal.hidden.rbegin(); it != journal.hidden.rend(); ++it) {
      if (it->first > 0 && it->first <= first_missing && hidden_snapshot_intact(dir, it->second, p.n_micro_batches())) {
        p.hidden_snapshot = it->second;
        break;
      }
    }
  }
  std::vector<int> redo;
  for (int i = 0; i < n_shards; ++i) {
    if (!p.committed[static_cast<size_t>(i)]) redo.push_back(i);
  }
  p.resume_report = {{"resumed", true},
                     {"shards_total", n_shards},
                     {"shards_reused", reused},
                     {"shards_redo", redo},
                     {"shards_adopted", adopted},
                     {"damaged", bad},
                     {"measure_reused", journal.measure.has_value()},
                     {"hidden_snapshot_layer", p.hidden_snapshot.is_null() ? json(nullptr) : p.hidden_snapshot.at("layer")},
                     {"torn_journal_line", journal.torn_tail}};
}

JournalWriter prepare_output(const JobPlan& p) {
  const fs::path dir = p.spec.output;
  std::error_code ec;
  fs::create_directories(dir, ec);
  io_check(!ec, "cannot create output directory '{}': {}", p.spec.output, ec.message());
  // Nothing may claim completion while the checkpoint is being (re)written.
  remove_owned(dir, manifest_file_name);
  if (p.resumed) {
    JournalWriter journal = JournalWriter::resume(dir, journal_read(dir));
    for (const JournalShard& s : p.adopted) journal.append_shard(s);
    return journal;
  }
  // A fresh start over an earlier job's output (--force): remove what that job recorded.
  const int n_shards = static_cast<int>(checkpoint_shard_layers(p.config).size());
  for (int index = 0; index < n_shards; ++index) commit_record_remove(dir, checkpoint_shard_name(index));
  if (journal_exists(dir)) {
    try {
      const Journal old = journal_read(dir);
      for (const auto& [index, s] : old.shards) remove_owned(dir, s.file);
      for (const auto& [layer, snapshot] : old.hidden) remove_hidden_snapshot(dir, snapshot);
    } catch (const io_error&) {
      // A damaged journal: the files it named cannot be known; they are overwritten below.
    }
  }
  remove_owned(dir, checkpoint_master_name);
  return JournalWriter::create(dir, p.identity);
}

}  // namespace shardq
