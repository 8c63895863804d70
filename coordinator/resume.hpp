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

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/checkpoint_journal.hpp"
#include "coordinator/job_plan.hpp"

namespace shardq {

// Rank 0: the identity of the planned job (see top). Hashes the model files.
nlohmann::json job_identity(const JobPlan& p);

// Rank 0, before any work: what DIR's journal contributes. Without a journal, nothing (an
// empty or missing directory; a non-empty one is refused). With one, the identities must be
// equal (spec_error naming the field, the model file or the calibration otherwise), and
// every committed shard is verified. Fills p.committed, p.measure and p.resume_report.
void resume_check(JobPlan& p);

// Rank 0, after the plan: creates the output directory, withdraws an old manifest.json,
// and opens the journal — continued when p.resumed, else started afresh (with --force the
// files an earlier job recorded are removed first; nothing else in the directory is touched).
JournalWriter prepare_output(const JobPlan& p);

}  // namespace shardq
