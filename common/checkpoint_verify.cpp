// Checksum verification of a checkpoint directory; see checkpoint_verify.hpp.
#include "common/checkpoint_verify.hpp"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "common/checkpoint.hpp"
#include "common/error.hpp"
#include "common/json_text.hpp"
#include "common/log.hpp"
#include "common/manifest.hpp"
#include "common/sha256.hpp"
#include "common/thread_pool.hpp"

namespace shardq {

namespace fs = std::filesystem;
using nlohmann::json;

const char* shard_state_name(shard_state s) {
  switch (s) {
    case shard_state::ok: return "ok";
    case shard_state::missing: return "missing";
    case shard_state::bad: return "bad";
  }
  return "?";
}

ShardCheck check_shard_digest(const JournalShard& s, const std::string& digest) {
  ShardCheck c{s.index, s.file, s.layers, shard_state::ok, {}};
  if (digest.empty()) {
    c.state = shard_state::missing;
    c.detail = "file is missing or unreadable";
  } else if (digest != s.sha256) {
    c.state = shard_state::bad;
    c.detail = fmt::format("sha256 {} does not match the recorded {}", digest.substr(0, 16), s.sha256.substr(0, 16));
  }
  return c;
}

ShardCheck verify_shard(const fs::path& dir, const JournalShard& s) {
  std::string digest;
  try {
    digest = sha256_file(dir / s.file);
  } catch (const io_error&) {
    // missing or unreadable: check_shard_digest says so
  }
  return check_shard_digest(s, digest);
}

// model.h5 of a finished checkpoint against manifest.json and the shards (which are hashed
// separately): present, readable by HDF5, holding the same manifest, and linking exactly the
// tensors the shards hold. On the calling thread: Debian's HDF5 is not thread-safe.
static std::string master_problem(const fs::path& dir, const json& manifest, const std::vector<ManifestShard>& shards) {
  const fs::path master = dir / checkpoint_master_name;
  try {
    const h5::File f = h5::File::open_read(master);
    std::string why;
    const json held = parse_json_text(f.read_attribute_string(checkpoint_manifest_attribute), why);
    if (held.is_discarded()) return "its manifest copy is not valid JSON: " + why;
    if (held != manifest) return "its manifest copy differs from manifest.json";
    std::set<std::string> tensors;
    for (const ManifestShard& s : shards) {
      std::error_code ec;
      if (!fs::is_regular_file(dir / s.file, ec)) continue;  // reported with the shard
      for (const std::string& name : h5::File::open_read(dir / s.file).link_names()) tensors.insert(name);
    }
    const std::vector<std::string> names = f.link_names();
    if (std::set<std::string>(names.begin(), names.end()) != tensors)
      return fmt::format("it links {} tensors, the shards hold {}", names.size(), tensors.size());
  } catch (const std::exception& e) {
    return one_line(e.what());
  }
  return {};
}

bool VerifyReport::ok() const {
  if (!layers_missing.empty() || !layers_bad.empty() || !master_problem.empty()) return false;
  return std::all_of(shards.begin(), shards.end(), [](const ShardCheck& c) { return c.state == shard_state::ok; });
}

json ShardCheck::to_json() const {
  json e{{"index", index}, {"file", file}, {"layers", layers}, {"state", shard_state_name(state)}};
  if (!detail.empty()) e["detail"] = detail;
  return e;
}

json VerifyReport::to_json() const {
  json shard_list = json::array();
  for (const ShardCheck& c : shards) shard_list.push_back(c.to_json());
  return {{"ok", ok()},
          {"complete", has_manifest},
          {"journal", has_journal},
          {"num_layers", num_layers},
          {"layers_missing", layers_missing},
          {"layers_bad", layers_bad},
          {"master", master_problem.empty() ? json("ok") : json(master_problem)},
          {"shards", shard_list}};
}

VerifyReport checkpoint_verify(const fs::path& dir) {
  VerifyReport r;
  std::error_code ec;
  r.has_manifest = fs::is_regular_file(dir / manifest_file_name, ec);
  r.has_journal = journal_exists(dir);
  if (!r.has_manifest && !r.has_journal)
    throw io_error(fmt::format("'{}' has neither {} nor {}: not a shardq checkpoint", dir.string(), manifest_file_name,
                               journal_file_name));

  // Which shards must exist, and what each holds: from the journal's identity (an
  // unfinished job) or from the manifest (a finished one, possibly without a journal).
  std::map<int, JournalShard> expected;
  std::set<int> uncommitted;
  if (r.has_journal) {
    const Journal j = journal_read(dir);
    r.num_layers = j.identity.at("num_layers").get<int>();
    const auto shard_layers = j.identity.at("shard_layers").get<std::vector<std::vector<int>>>();
    for (size_t i = 0; i < shard_layers.size(); ++i) {
      const int index = static_cast<int>(i);
      const auto it = j.shards.find(index);
      if (it != j.shards.end()) {
        expected[index] = it->second;
      } else {
        uncommitted.insert(index);
        r.shards.push_back({index, {}, shard_layers[i], shard_state::missing, "not committed"});
        for (int l : shard_layers[i]) r.layers_missing.push_back(l);
      }
    }
  }
  json manifest_json;  // read once: parsed here, compared with model.h5's copy below
  std::vector<ManifestShard> manifest_shards;
  if (r.has_manifest) {
    std::string source;
    manifest_json = manifest_read_json(dir, &source);
    const Manifest m = manifest_from_json(manifest_json, source);
    manifest_shards = m.shards;
    if (!r.has_journal) r.num_layers = static_cast<int>(m.layers.size());
    for (size_t i = 0; i < m.shards.size(); ++i) {
      const ManifestShard& s = m.shards[i];
      const auto same_file = std::find_if(expected.begin(), expected.end(),
                                          [&](const auto& e) { return e.second.file == s.file; });
      if (same_file != expected.end()) {
        if (same_file->second.sha256 != s.sha256) {
          r.shards.push_back({same_file->first, s.file, s.layers, shard_state::bad,
                              "the manifest and the journal record different sha256"});
          for (int l : s.layers) r.layers_bad.push_back(l);
          expected.erase(same_file);
        }
        continue;
      }
      if (r.has_journal) continue;  // the journal is authoritative for what it lists
      JournalShard js;
      js.index = static_cast<int>(i);
      js.file = s.file;
      js.sha256 = s.sha256;
      js.layers = s.layers;
      expected[js.index] = js;
    }
  }
  std::vector<JournalShard> to_check;
  for (const auto& [index, s] : expected) to_check.push_back(s);
  std::vector<ShardCheck> checks(to_check.size());
  parallel_for(static_cast<int>(to_check.size()),
               [&](int i) { checks[static_cast<size_t>(i)] = verify_shard(dir, to_check[static_cast<size_t>(i)]); });
  for (ShardCheck& c : checks) {
    if (c.state != shard_state::ok) {
      for (int l : c.layers) r.layers_bad.push_back(l);
    }
    r.shards.push_back(std::move(c));
  }
  std::sort(r.shards.begin(), r.shards.end(), [](const ShardCheck& a, const ShardCheck& b) { return a.index < b.index; });
  std::sort(r.layers_missing.begin(), r.layers_missing.end());
  std::sort(r.layers_bad.begin(), r.layers_bad.end());
  if (r.has_manifest) r.master_problem = master_problem(dir, manifest_json, manifest_shards);
  return r;
}

}  // namespace shardq
