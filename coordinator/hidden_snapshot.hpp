// Snapshots of the sequential schedule's hidden states, so that a resume does not replay the
// calibration set through every committed layer (coordinator/resume.hpp).
//
// After layer l is committed, the hidden states entering layer l+1 may be saved: one raw
// float32 file per calibration micro-batch (OUTPUT/hidden/L00004-mb00012.f32, written
// atomically by the rank that holds the micro-batch — the files do not depend on the rank
// count), then one journal entry {"layer", "files": [{"mb", "file", "sha256"}]} by rank 0,
// which then deletes the previous snapshot: at most one is kept. A resume starts from the
// latest intact snapshot at or before the first missing layer. The finished job deletes it.
//
// When: a snapshot costs a write now and a read on resume; it saves replaying the layers
// since the previous one. SHARDQ_HIDDEN_SNAPSHOTS=auto (default) takes one when the replay
// time accumulated since the last snapshot exceeds 4 × the (measured) write time — so
// snapshots add at most a quarter to the propagation time, a few percent of the job;
// "every" takes one after every layer, "off" none.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>

namespace shardq {

inline constexpr const char* hidden_snapshot_dir = "hidden";

// Writes this rank's micro-batches mb0, mb0+1, ... entering `layer`; returns their file
// entries [{"mb", "file", "sha256"}] (file names relative to `out`).
nlohmann::json write_hidden_snapshot(const std::filesystem::path& out, int layer, int mb0,
                                     const std::vector<std::vector<float>>& hidden);
// Micro-batch `mb` of `snapshot` ([n_floats], sha256 checked); io_error naming the file.
std::vector<float> read_hidden_snapshot(const std::filesystem::path& out, const nlohmann::json& snapshot, int mb,
                                        size_t n_floats);
// Every file of `snapshot` present with its recorded sha256, covering micro-batches [0, n_mb).
bool hidden_snapshot_intact(const std::filesystem::path& out, const nlohmann::json& snapshot, int n_micro_batches);
// Removes the files of `snapshot` (missing ones are fine), and the directory once empty.
void remove_hidden_snapshot(const std::filesystem::path& out, const nlohmann::json& snapshot);

class SnapshotPolicy {
 public:
  // `bytes` of one snapshot (all ranks), for the first write-time estimate.
  explicit SnapshotPolicy(int64_t bytes);
  // Whether to take one now, after `replay_seconds` of propagation since the last one.
  bool due(double replay_seconds) const;
  void written(double seconds) { write_seconds_ = seconds; }

 private:
  enum class mode { automatic, every, off } mode_;
  double write_seconds_;
};

}  // namespace shardq
