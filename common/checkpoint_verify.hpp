// Verification of a checkpoint directory against its checksums (`shardq inspect --verify`,
// and the first step of every resume): each shard file the journal or the manifest lists is
// re-read and its sha256 compared, and every decoder layer is reported as committed and
// intact, or missing, or bad.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/checkpoint_journal.hpp"

namespace shardq {

enum class shard_state { ok, missing, bad };
const char* shard_state_name(shard_state s);

struct ShardCheck {
  int index = 0;
  std::string file;
  std::vector<int> layers;
  shard_state state = shard_state::ok;
  std::string detail;  // what is wrong ("sha256 ... != recorded ...", "file is missing")
  nlohmann::json to_json() const;
};

// The state of shard `s` given the sha256 of its file as it is now ("" when the file is
// missing or unreadable).
ShardCheck check_shard_digest(const JournalShard& s, const std::string& digest);
// Re-hashes DIR/s.file and compares with the recorded sha256.
ShardCheck verify_shard(const std::filesystem::path& dir, const JournalShard& s);

struct VerifyReport {
  bool has_manifest = false;  // manifest.json present: the job finished
  bool has_journal = false;
  int num_layers = 0;         // decoder layers of the model (-1 when unknown)
  std::vector<ShardCheck> shards;
  std::vector<int> layers_missing;  // not committed by the journal / not in the manifest
  std::vector<int> layers_bad;      // committed, but the shard file is missing or damaged
  // Finished checkpoints: what is wrong with model.h5 (missing, unreadable, a manifest copy
  // other than manifest.json, links other than the shards' tensors); empty when it is right.
  std::string master_problem;
  bool ok() const;                  // complete and every checksum matches, model.h5 right
  nlohmann::json to_json() const;
};

// Throws io_error when DIR has neither a journal nor a manifest, or they cannot be parsed.
VerifyReport checkpoint_verify(const std::filesystem::path& dir);

}  // namespace shardq
