// The resume journal of a checkpoint directory (journal.jsonl): which shard files are
// committed, with their checksums and manifest records, under the identity of the job that
// wrote them (spec, model and calibration fingerprints).
//
// One JSON object per line, each line written with one write() and fsynced before the
// next step of the job relies on it:
//   {"journal": "shardq-journal", "version": 1, "identity": {...}}          header, line 1
//   {"entry": {"shard": {...}}, "sha256": "..."}                         a committed shard
//   {"entry": {"measure": {...}}, "sha256": "..."}            the precision policy's decision
//   {"entry": {"hidden": {"layer": l, "files": [...]}}, ...}   hidden states entering layer l
// "sha256" is the digest of the entry's canonical dump (sorted keys), so a damaged line is
// told apart from a valid one. A line cut short by a crash during its append is the only
// damage a crash can cause (the file is append-only): it is ignored on read and cut off
// before the next append. Any other bad line is an error — the journal cannot be trusted.
// A later entry for the same shard replaces the earlier one (a shard redone on resume).
//
// A shard is committed when (1) its file was written as NAME.tmp, fsynced and renamed
// (atomic_file.hpp), and (2) its journal line is on disk. Between the two, the writing rank
// and rank 0 may die (a pipeline round journals every rank's layer at its end; the sequential
// schedule journals layer l while layer l + 1 runs), so before the rename the writer also
// publishes the entry beside the file as NAME.commit.json, with the file's sha256 and the
// digest of the job's identity. A resume adopts a file the journal lacks when its commit
// record names this job and its sha256 matches (and journals it then); any other file
// without a line is redone. The records are removed when the checkpoint is finished.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/unique_fd.hpp"

namespace shardq {

inline constexpr const char* journal_file_name = "journal.jsonl";
inline constexpr const char* journal_format = "shardq-journal";
inline constexpr int journal_version = 1;

struct JournalShard {
  int index = 0;
  std::string file;    // relative to the checkpoint directory
  std::string sha256;  // of the file's bytes
  int64_t bytes = 0;   // tensor bytes it stores (manifest summary.bytes)
  std::vector<int> layers;
  nlohmann::json records = nlohmann::json::object();  // partial manifest: "layers", "modules"
};

nlohmann::json journal_shard_to_json(const JournalShard& s);
JournalShard journal_shard_from_json(const nlohmann::json& j, const std::string& context);

struct Journal {
  nlohmann::json identity;
  std::map<int, JournalShard> shards;   // by shard index, the latest entry of each
  std::optional<nlohmann::json> measure;
  std::map<int, nlohmann::json> hidden;  // snapshots of the hidden states, by layer they enter
  int64_t valid_bytes = 0;  // length of the intact prefix (complete, verified lines)
  bool torn_tail = false;   // the last line was cut short by a crash
};

// Reads DIR/journal.jsonl. Throws io_error naming the file and line when the header or a
// complete line is damaged (see top).
Journal journal_read(const std::filesystem::path& dir);
bool journal_exists(const std::filesystem::path& dir);

// Commit records (see top). "shard-00003.h5" → "shard-00003.h5.commit.json".
std::string commit_record_name(const std::string& shard_file);
// Publishes DIR/commit_record_name(s.file) atomically: `s` (sha256 filled) and the identity digest.
void commit_record_write(const std::filesystem::path& dir, const JournalShard& s, const std::string& identity_sha256);
// The entry recorded beside DIR/shard_file, if its record exists, is intact and was written
// by the job whose identity digest is `identity_sha256`; none otherwise (the shard is redone).
std::optional<JournalShard> commit_record_read(const std::filesystem::path& dir, const std::string& shard_file,
                                               const std::string& identity_sha256);
// Removes the record of `shard_file` if there is one.
void commit_record_remove(const std::filesystem::path& dir, const std::string& shard_file);

// Appends lines to a journal (one writer: rank 0 of the job).
class JournalWriter {
 public:
  // Starts a journal with `identity` (atomically replaces any journal in DIR).
  static JournalWriter create(const std::filesystem::path& dir, const nlohmann::json& identity);
  // Continues the journal read as `j`, cutting off a torn last line first.
  static JournalWriter resume(const std::filesystem::path& dir, const Journal& j);

  void append_shard(const JournalShard& s);
  void append_measure(const nlohmann::json& decision);
  void append_hidden(const nlohmann::json& snapshot);  // {"layer": l, "files": [...]}

 private:
  JournalWriter(std::filesystem::path path, UniqueFd file) : path_(std::move(path)), file_(std::move(file)) {}
  void append_entry(const nlohmann::json& entry);

  std::filesystem::path path_;
  UniqueFd file_;  // moved, not copied
};

}  // namespace shardq
