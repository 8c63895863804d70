// The job manager of the coordinator service: validates submissions (job spec, data roots),
// keeps the job store in the state directory, and runs a supervisor thread that starts
// queued jobs under the concurrency limit, reads their progress files, follows their
// launchers and records how they end.
//
// Restart (kill -9 included): every job.json is read back. Queued jobs stay queued and start;
// running jobs are re-attached through their launcher_info (local: pid + start time, then the
// exit status the wrapper wrote; SLURM: the job id). A job whose launch had begun but was not
// yet recorded is looked for by its launcher (local: the process group whose environment names
// the job's exit file; SLURM: squeue by the job's name) and re-attached, or queued again when
// nothing is found: never launched twice. While the launcher cannot be asked (squeue fails)
// the job stays running, its launcher_info naming the lookup_error, and is looked for again
// on every supervisor pass. A job ends succeeded only with exit status 0 and a
// manifest.json in its output, failed with the reason otherwise.
#pragma once

#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/job_spec.hpp"
#include "coordinator/service/job_record.hpp"
#include "coordinator/service/launcher.hpp"

namespace shardq::service {

// An error with its HTTP status, code and the spec field it concerns (may be empty).
struct api_error : std::runtime_error {
  api_error(int status, std::string code, const std::string& message, std::string field = {})
      : std::runtime_error(message), status_(status), code_(std::move(code)), field_(std::move(field)) {}
  int status() const noexcept { return status_; }
  const std::string& code() const noexcept { return code_; }
  const std::string& field() const noexcept { return field_; }

 private:
  int status_;
  std::string code_;
  std::string field_;
};

struct ServiceConfig {
  std::filesystem::path state_dir;
  std::vector<std::filesystem::path> data_roots;  // made canonical by the manager
  int max_running = 1;                             // jobs launched at the same time
  LauncherConfig launcher;
  std::chrono::milliseconds poll_interval{250};
};

// `path` (relative paths are taken relative to the first data root) made absolute with every
// symlink of its existing part resolved; api_error 403 naming `field` unless it lies inside
// one of `roots` (canonical).
std::filesystem::path resolve_in_data_roots(const std::string& path, const std::string& field,
                                            const std::vector<std::filesystem::path>& roots);

class JobManager {
 public:
  explicit JobManager(ServiceConfig config);
  ~JobManager();
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  void start();  // the supervisor thread
  void stop();   // jobs keep running; a restarted service re-attaches to them

  // POST /v1/jobs: validates, stores and queues. `force` lets the job replace a checkpoint
  // in a non-empty output directory (passed on as --force); without it such a job is refused.
  JobRecord submit(const nlohmann::json& body, bool force);
  std::optional<JobRecord> get(const std::string& id) const;
  std::vector<JobRecord> list() const;  // oldest first
  // Cancels a queued job at once; asks a running one to stop (it ends as cancelled once its
  // processes are gone). api_error 404 / 409.
  JobRecord cancel(const std::string& id);
  // Re-queues a failed or cancelled job with "resume": true. api_error 404 / 409.
  JobRecord resume(const std::string& id);

  std::map<job_state, int> count_by_state() const;
  long layers_quantized() const;  // over every job's current attempt
  JobPaths paths(const std::string& id) const { return JobPaths(config_.state_dir, id); }
  const ServiceConfig& config() const { return config_; }

 private:
  void recover();
  void recover_launch(JobRecord& job);
  void resolve_launch(const JobRecord& job);  // recover_launch retried by the supervisor
  // What the job would refuse at its start, refused now: api_error 400 naming the field
  // (invalid_spec, unsupported_model, invalid_model).
  void check_plan(const JobSpec& spec, bool force) const;
  void save(const JobRecord& job) const;
  // 409 output_in_use when a job of this service other than `self` writes an output that is,
  // holds or lies in `output`, or another process holds its lock (common/output_lock.hpp).
  // Called with mutex_ held.
  void check_output_free(const std::string& output, const std::string& self) const;
  void supervise();
  void poll_running();
  void poll_one(JobRecord& job);  // poll_running's work for one job
  void start_queued();
  void finish(JobRecord& job, const LaunchPoll& poll) const;
  Launcher* launcher_for(const std::string& kind);

  ServiceConfig config_;
  std::map<std::string, std::unique_ptr<Launcher>> launchers_;
  mutable std::mutex mutex_;
  std::map<std::string, JobRecord> jobs_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread supervisor_;
};

}  // namespace shardq::service
