// Launchers of the coordinator service: how a job's `shardq quantize` is started, followed
// and cancelled.
//   local: `mpirun --oversubscribe -np RANKS shardq quantize --config spec.json --progress json
//          --progress-file progress.jsonl [--force]` under a small /bin/sh wrapper that writes
//          the exit status to exit_code, in its own process group, output to log.txt, Open
//          MPI's session directories under mpi/ (OMPI_MCA_orte_tmpdir_base, unless set).
//   slurm: a template from slurm/ rendered into job.sbatch ({{NAME}} variables, see README),
//          `sbatch --parsable`, followed with squeue and `scontrol show job`, cancelled with
//          scancel. The script writes exit_code itself.
// Both identify a job again after a service restart from launcher_info alone (pid + start
// time, or the SLURM job id), so a restarted service re-attaches to what is still running.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "coordinator/service/job_record.hpp"

namespace shardq::service {

struct LauncherConfig {
  std::string kind = "local";                   // local | slurm
  int ranks = 1;                                // MPI ranks per job
  std::filesystem::path shardq_bin;             // the executable the jobs run
  std::string mpirun = "mpirun";
  std::filesystem::path slurm_template;         // slurm/single_node.sbatch
  std::map<std::string, std::string> slurm_vars;  // template variables set by the operator
  std::chrono::seconds cancel_grace{2};         // SIGTERM, then SIGKILL after this long
};

struct LaunchPoll {
  bool finished = false;
  std::optional<int> exit_code;   // when known
  std::string detail;             // why it ended, for the job's error
  nlohmann::json info_update = nlohmann::json::object();  // merged into launcher_info
};

class Launcher {
 public:
  virtual ~Launcher() = default;
  virtual std::string kind() const = 0;
  // Starts the job; returns its launcher_info. Throws io_error when it cannot start.
  virtual nlohmann::json launch(const JobRecord& job, const JobPaths& paths) = 0;
  // Is it still running? How did it end?
  virtual LaunchPoll poll(const JobRecord& job, const JobPaths& paths) = 0;
  // Asks the job to stop; called again each poll while cancel_requested (escalates).
  virtual nlohmann::json cancel(const JobRecord& job) = 0;
  // A launch the service began but had not recorded when it stopped (between fork or sbatch
  // and saving the job's record): the launcher_info of the job it finds running, or null when
  // it finds none (the job is queued again). Throws io_error when it cannot tell.
  virtual nlohmann::json find_unrecorded(const JobRecord& job, const JobPaths& paths) = 0;
};

std::unique_ptr<Launcher> launcher_create(const LauncherConfig& config);

// Replaces every {{NAME}} in `text` by vars[NAME]; io_error naming the variable when one is
// missing or its value holds characters unsafe in a shell script or an #SBATCH line.
std::string slurm_template_render(const std::string& text, const std::map<std::string, std::string>& vars,
                                  const std::string& template_name);

// The exit status a job's wrapper wrote, when present.
std::optional<int> job_exit_code_read(const JobPaths& paths);

}  // namespace shardq::service
