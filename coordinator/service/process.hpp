// Child processes of the coordinator service: spawning a job in its own process group with
// its output in a log file, running short commands (sbatch, squeue, scancel) with a timeout,
// and recognising a process again after a restart by its pid and start time (a pid alone
// can be reused by an unrelated process once the original has gone).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace shardq::service {

// Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat), or nullopt
// when the process does not exist or is a zombie (it has finished and only awaits reaping).
std::optional<uint64_t> process_start_time(pid_t pid);

// True while the process `pid` runs and still has the recorded start time.
bool process_alive(pid_t pid, uint64_t start_time);

// Every live descendant of `pid` (children, grandchildren, ...) from /proc: mpirun's ranks
// may leave its process group, so cancellation signals them one by one as well.
std::vector<pid_t> process_descendants(pid_t pid);

// The live process-group leaders whose environment holds NAME=VALUE (/proc/PID/environ is
// readable for the service's own processes): how the local launcher finds a job it started
// but had not recorded when the service stopped.
std::vector<pid_t> process_group_leaders_with_env(const std::string& name, const std::string& value);

// The argv of `pid` (/proc/PID/cmdline); empty when it is gone.
std::vector<std::string> process_cmdline(pid_t pid);

// The live processes whose argv holds every one of `args` (in any position): how the SLURM
// launcher sees that an sbatch it started before a restart is still submitting.
std::vector<pid_t> processes_with_args(const std::vector<std::string>& args);

// posix_spawn of argv[0] (searched in PATH) in a new process group whose id is the child's
// pid, stdin from /dev/null, stdout and stderr appended to `log_file`, `env` added to the
// service's own environment. Throws io_error naming the program on failure.
pid_t spawn_process_group(const std::vector<std::string>& argv, const std::filesystem::path& log_file,
                          const std::map<std::string, std::string>& env = {});

// Reaps `pid` if it is our child and has exited: the exit code (128 + signal when killed),
// nullopt while it runs or when it is not our child.
std::optional<int> reap_child(pid_t pid);

struct CommandOutput {
  int exit_code = -1;   // 128 + signal when killed; -1 when it could not start
  std::string out;      // stdout
  std::string err;      // stderr
  bool timed_out = false;
};
// Runs argv (searched in PATH) and captures its output; kills it after `timeout`.
CommandOutput run_command_capture(const std::vector<std::string>& argv, std::chrono::milliseconds timeout);

}  // namespace shardq::service
