// The job plan: what rank 0 decides before any work — the validated spec, the model config,
// the layer partition, the precision allocation, the calibration windows and micro-batches —
// and every rank receives (coordinator/quantize_job.hpp describes the whole job).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/comm.hpp"
#include "common/checkpoint_journal.hpp"
#include "common/job_spec.hpp"
#include "common/model_config.hpp"
#include "common/output_lock.hpp"
#include "coordinator/allocation.hpp"
#include "coordinator/plan.hpp"
#include "coordinator/precision_policy.hpp"
#include "coordinator/quantize_job.hpp"
#include "worker/sequential_engine.hpp"

namespace shardq {

// What rank 0 decides and every rank receives.
struct JobPlan {
  JobSpec spec;
  ModelConfig config;
  LayerPlan layers;
  Allocation allocation;
  int seq_len = 0;
  int micro_batch = 1;               // samples per micro-batch
  std::vector<int32_t> windows;      // [samples * seq_len] calibration tokens (empty: none)
  PrecisionScores scores;            // from the measurement pass (lim, zd, sensitivity)
  // Resume (coordinator/resume.hpp). committed[i]: shard i is journalled and intact, skip it.
  bool resumed = false;
  std::vector<uint8_t> committed;
  bool measure_journalled = false;   // allocation and scores come from the journal
  nlohmann::json hidden_snapshot;    // sequential: the snapshot to start from (null: embed)
  nlohmann::json identity;           // rank 0 only: job_identity()
  std::string identity_sha256;       // its digest, on every rank (the shards' commit records)
  std::vector<JournalShard> adopted; // rank 0 only: published shards the journal lacked (resume.hpp)
  nlohmann::json resume_report;      // rank 0 only: what resume_check() found
  CudaMatmul cuda_matmul;            // device cuda: matmul precision per phase (SHARDQ_CUDA_MATMUL)
  std::optional<OutputLock> output_lock;  // rank 0 only, not with --dry-run: held until the job ends
  bool is_committed(int shard) const { return committed.at(static_cast<size_t>(shard)) != 0; }
  int samples() const { return seq_len ? static_cast<int>(windows.size() / static_cast<size_t>(seq_len)) : 0; }
  int n_micro_batches() const { return (samples() + micro_batch - 1) / micro_batch; }
  int mb_begin(int m) const { return m * micro_batch; }
  int mb_size(int m) const { return std::min(micro_batch, samples() - m * micro_batch); }
};

// What the spec and the model's files decide on any machine: the model config, every tensor
// the job reads (name, shape, dtype), the layer partition, the precision allocation (a budget
// the bit options cannot reach fails here) and whether calibration text is required. Left to
// the run: the device, which needs the machine that runs the job, and the calibration windows,
// which read and tokenize the whole text. The REST coordinator calls it at submit, so a spec
// the job would refuse is answered 400 instead of accepted and failed when it runs.
JobPlan plan_from_spec(const JobSpec& spec, int n_ranks);

// Rank 0 builds the plan (everything that can fail on user input, before any work starts)
// and, unless it is a dry run, locks the output before it reads what an earlier run left
// there; every rank gets the plan, or the same collective_error.
JobPlan broadcast_plan(Comm& comm, const nlohmann::json& spec_json, const JobOptions& options);

// The allocation's entries for the linears of `layer`.
std::vector<ModuleChoice> layer_choices(const Allocation& a, int layer);

}  // namespace shardq
