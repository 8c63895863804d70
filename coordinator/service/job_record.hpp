// One job of the coordinator service as it is stored in the state directory
// (STATE/jobs/ID/job.json, written atomically on every change) and shown by the REST API.
// Beside job.json the job directory holds spec.json (the validated spec the job runs, paths
// made absolute), progress.jsonl (the job's JSON progress lines), log.txt (its output),
// exit_code (written by the job's wrapper when it ends), mpi/ (the Open MPI session
// directories of a local launch) and, for SLURM, job.sbatch.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace shardq::service {

enum class job_state { queued, running, succeeded, failed, cancelled };
const char* job_state_name(job_state s);
job_state job_state_from_name(const std::string& name);  // spec_error on unknown
inline bool job_state_final(job_state s) { return s == job_state::succeeded || s == job_state::failed || s == job_state::cancelled; }

struct JobRecord {
  std::string id;
  job_state state = job_state::queued;
  std::string phase;                 // last phase reported by the job ("plan", "quantize", "done")
  int layers_done = 0;               // decoder layers quantized so far in this attempt
  int layers_total = 0;              // from the job's plan event
  std::optional<double> eta_s;       // of the current phase
  std::string error;                 // why it failed
  std::string launcher;              // local | slurm
  nlohmann::json launcher_info = nlohmann::json::object();  // pid, pgid, start_time / slurm_job_id, ...
  nlohmann::json spec;               // the validated spec (also in spec.json)
  bool force = false;                // pass --force: replace a checkpoint in a non-empty output
  int attempts = 0;                  // launches so far (resume adds one)
  bool cancel_requested = false;
  double created_at = 0, started_at = 0, finished_at = 0;  // unix seconds, 0 = not yet
  uint64_t progress_offset = 0;      // bytes of progress.jsonl already read
};

nlohmann::json job_record_to_json(const JobRecord& job);
JobRecord job_record_from_json(const nlohmann::json& j);  // throws on a malformed record

// Files of one job.
struct JobPaths {
  std::filesystem::path dir, record, spec, progress, log, exit_code, sbatch, mpi_session;
  JobPaths(const std::filesystem::path& state_dir, const std::string& id);
};

}  // namespace shardq::service
