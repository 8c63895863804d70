// The quantize job, run by every rank of `mpirun -np N shardq quantize` (N = 1 included):
//
//   plan       rank 0 validates the spec against the filesystem, reads config.json and the
//              safetensors headers, splits the decoder layers into contiguous shards balanced
//              by cost, allocates precision, samples the calibration windows; all of it is
//              broadcast.
//   calibrate  / quantize, by schedule (../shared/DESIGN.md, "Data flow"):
//     pipeline    every rank loads only its layers; micro-batches of hidden states stream
//                 rank to rank while each rank accumulates its layers' statistics on the
//                 unquantized model; then all ranks quantize their layers at once.
//     sequential  exact GPTQ order: layer l is calibrated on the outputs of the already
//                 quantized layers 0..l-1. The ranks cooperate on one layer at a time:
//                 micro-batches split across ranks, Hessians reduced exactly, GPTQ rows split.
//   commit     each layer's shard is committed as soon as it is quantized (file fsynced and
//              renamed, then its line in the journal, written by rank 0); the last shard holds
//              embedding, final norm and lm_head (coordinator/shard_output.hpp).
//   finalize   rank 0 builds the manifest from the journal, writes model.h5, manifest.json last.
//   resume     with spec.resume, the journal's intact layers are skipped and only the rest is
//              computed (coordinator/resume.hpp), giving the same files as an uninterrupted run.
//
// Micro-batches are fixed by the spec alone (never by the rank count), and every reduction
// is exact, so the quantized tensors are bit-identical for any N.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "comm/comm.hpp"
#include "common/error.hpp"
#include "common/progress.hpp"

namespace shardq {

struct JobOptions {
  bool force = false;     // replace the checkpoint in a non-empty output directory
  bool dry_run = false;   // calibrate and report LIM/ZD per layer; write nothing
  progress_mode progress = progress_mode::human;
  std::filesystem::path progress_file;  // JSON lines appended here too (rank 0)
};

// An error every rank detected together (e.g. a bad spec checked on rank 0 and broadcast):
// rank 0 reports it, the others exit quietly, and no rank needs to abort the job.
struct collective_error : error {
  using error::error;
};

// Runs the job on this rank. Returns a JSON report on rank 0 (the manifest summary, or the
// dry-run scores), null elsewhere. Throws collective_error for spec problems found before
// any work, anything else for failures of this rank.
nlohmann::json quantize_job_run(Comm& comm, const nlohmann::json& spec_json, const JobOptions& options);

// Samples per calibration micro-batch: about 512 tokens, fixed by seq_len alone.
int calibration_micro_batch(int seq_len);

}  // namespace shardq
