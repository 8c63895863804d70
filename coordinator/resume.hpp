// Resume: what an interrupted job's checkpoint directory contributes to the next run.
//
// The journal's header holds the job's identity — everything that decides the bits of the
// checkpoint: the result-relevant spec fields, the sha256 of every model file, the sha256 of
// the calibration file and of the sampled calibration tokens, the shard layout and the
// shardq version. Paths, the output directory, comm and the rank count are not part of it:
// the result does not depend on them, so a job may resume from a moved directory or with a
// different number of ranks. A resume whose identity differs is refused, naming what changed.
//
// Then every committed shard is re-hashed; intact ones are skipped, missing or damaged ones
// (and shards never committed) are redone. What the remaining layers need is recomputed,
// not stored: the Hessians of a 400B model's layers would take ~1.8 TB (126 layers × (3 ×
// 16384² + 53248²) × 4 B), more than the model, and recomputing a layer's statistics costs
// about what writing and reading them back would. The hidden states entering the first
// missing layer (sequential schedule) are the exception: they are the size of the
// calibration set's activations (128 × 2048 × 16384 × 4 B = 17 GB for a 400B model), and
// recomputing them replays every committed layer (a forward pass each, ~40% of a layer's
// work at Llama-3-8B shapes). So they are snapshotted when replaying would cost more than
// writing (coordinator/hidden_snapshot.hpp), and the resume starts from the latest intact
// snapshot, replaying through committed layers (as stored, dequantized) only from there.
// The job counts the work it does and reports it (work_fraction in the manifest's "run").
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/comm.hpp"
#include "common/checkpoint_journal.hpp"
#include "coordinator/job_plan.hpp"

namespace shardq {

// Collective: the sha256 of the files rank 0 names, each rank hashing every N-th file (a
// 400B model's 800 GB take minutes on one core). A file that cannot be read gets "".
// Returns the digests on rank 0, nothing elsewhere.
std::vector<std::string> collective_sha256(Comm& comm, const std::vector<std::filesystem::path>& root_paths);

// The model files the identity covers (config.json, safetensors, index), relative names.
std::vector<std::string> model_identity_files(const JobPlan& p);
// Rank 0: the identity of the planned job (see top), from the digests of
// model_identity_files() in that order.
nlohmann::json job_identity(const JobPlan& p, const std::vector<std::string>& model_digests);

// --resume into a directory that holds files (the lock file aside) but no journal is
// refused (spec_error "resume"). broadcast_plan calls it before it locks the output, so that
// a foreign directory is left exactly as it was; resume_open again under the lock, where no
// other job can have written meanwhile.
void resume_check_target(const JobPlan& p);

// Rank 0, before any work: the journal an existing output directory holds for this job, or
// none. Without a journal: an empty or missing directory is a fresh start, a non-empty one
// is refused. With one, the identities must be equal (spec_error naming the field, the model
// file or the calibration otherwise).
std::optional<Journal> resume_open(const JobPlan& p);
// Rank 0: the commit records of this job's shards that were published but never journalled
// (common/checkpoint_journal.hpp: a rank died between the rename and the journal line).
std::vector<JournalShard> resume_commit_records(const JobPlan& p, const Journal& journal);
// Rank 0: decides from `journal`, the commit records and the digests of the shard files
// (journal.shards in order, then the records' files) what is committed and where the
// sequential schedule starts. A recorded shard whose file has the recorded digest is adopted
// (p.adopted: prepare_output journals it). Fills p.committed, p.adopted, p.resumed,
// p.measure_journalled (+ allocation, scores), p.hidden_snapshot, p.resume_report.
void resume_decide(JobPlan& p, const Journal& journal, const std::vector<JournalShard>& records,
                   const std::vector<std::string>& shard_digests);

// Rank 0, after the plan: creates the output directory, withdraws an old manifest.json,
// and opens the journal — continued when p.resumed (with p.adopted appended), else started
// afresh (with --force the files an earlier job recorded, and every shard's commit record,
// are removed first; nothing else in the directory is touched).
JournalWriter prepare_output(const JobPlan& p);

}  // namespace shardq
