// Local and SLURM launchers of the coordinator service (see launcher.hpp).
#include "coordinator/service/launcher.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "coordinator/service/process.hpp"

namespace shardq::service {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  const auto e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// The arguments of `shardq quantize` for one job; the same for both launchers.
std::vector<std::string> quantize_args(const LauncherConfig& c, const JobRecord& job, const JobPaths& paths) {
  std::vector<std::string> args = {c.shardq_bin.string(), "quantize", "--config", paths.spec.string(),
                                   "--progress", "json", "--progress-file", paths.progress.string()};
  if (job.force) args.push_back("--force");
  // Explicit, not only "resume": true in spec.json: the flag is what quantize trusts when
  // the two disagree.
  if (job.spec.value("resume", false)) args.push_back("--resume");
  return args;
}

// Runs the command and writes its exit status to $SHARDQ_EXIT_FILE (atomically, via mv):
// the status survives a restart of the service, which cannot waitpid() an adopted job.
constexpr const char* exit_wrapper =
    "\"$@\"; code=$?; printf '%s\\n' \"$code\" > \"$SHARDQ_EXIT_FILE.tmp\" && mv -f \"$SHARDQ_EXIT_FILE.tmp\" "
    "\"$SHARDQ_EXIT_FILE\"; exit $code";

class LocalLauncher final : public Launcher {
 public:
  explicit LocalLauncher(LauncherConfig c) : c_(std::move(c)) {}
  std::string kind() const override { return "local"; }

  json launch(const JobRecord& job, const JobPaths& paths) override {
    const std::vector<std::string> argv = job_argv(job, paths);
    std::map<std::string, std::string> env = {{"SHARDQ_EXIT_FILE", paths.exit_code.string()},
                                              {"OMPI_MCA_rmaps_base_oversubscribe", "1"}};
    // Open MPI 4.1 keeps the session directories of all of a user's jobs on a host under one
    // <tmp>/ompi.<host>.<uid> and removes it when its last job ends; an mpirun starting at that
    // moment fails in orte_session_dir ("A call to mkdir was unable to create the desired
    // directory", open-mpi/ompi#8510). With --max-running > 1 that is two of our own jobs, so
    // each job gets its own base, in its directory. An operator's own choice is kept.
    if (!std::getenv("OMPI_MCA_orte_tmpdir_base")) env["OMPI_MCA_orte_tmpdir_base"] = paths.mpi_session.string();
    if (::geteuid() == 0) {
      env["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
      env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
    }
    return launch_info(spawn_process_group(argv, paths.log, env), argv);
  }

  // Its wrapper leads its own process group and carries the job's exit file, a path no other
  // job's process has, in its environment. Open MPI makes every rank a group leader too, with
  // the same environment: the wrapper is the one whose argv names it "shardq-job".
  json find_unrecorded(const JobRecord& job, const JobPaths& paths) override {
    for (const pid_t pid : process_group_leaders_with_env("SHARDQ_EXIT_FILE", paths.exit_code.string())) {
      const auto argv = process_cmdline(pid);
      if (argv.size() > 3 && argv[3] == "shardq-job") return launch_info(pid, job_argv(job, paths));
    }
    return nullptr;
  }

  LaunchPoll poll(const JobRecord& job, const JobPaths& paths) override {
    LaunchPoll r;
    const auto& info = job.launcher_info;
    const pid_t pid = info.value("pid", 0);
    if (pid <= 0) {
      r.finished = true;
      r.detail = "no process was recorded for this job";
      return r;
    }
    bool leader_done = false;
    std::optional<int> code;
    if (auto reaped = reap_child(pid)) {
      leader_done = true;
      code = reaped;
    } else if (!process_alive(pid, info.value("start_time", uint64_t{0}))) {
      leader_done = true;  // adopted after a restart (not our child), or reaped already
    }
    if (!leader_done) return r;
    if (auto file_code = job_exit_code_read(paths)) code = file_code;
    if (group_alive(info)) {
      // Leftover ranks of a finished job are killed at once; a cancelled job's get the
      // grace period of cancel().
      if (!job.cancel_requested) signal_all(info, SIGKILL);
      return r;
    }
    r.finished = true;
    r.exit_code = code;
    if (!code)
      r.detail = fmt::format("job process {} is gone and left no exit status (killed, or the machine restarted)", pid);
    return r;
  }

  json cancel(const JobRecord& job) override {
    json info = job.launcher_info;
    if (!info.contains("pid")) return json::object();
    json update = json::object();
    if (!info.contains("cancel_sent_at")) {
      // Snapshot the whole tree before the first signal: once the wrapper dies its children
      // are re-parented and can no longer be found from it.
      json pids = json::array();
      for (pid_t p : process_descendants(info["pid"].get<pid_t>())) {
        if (auto t = process_start_time(p)) pids.push_back({{"pid", p}, {"start_time", *t}});
      }
      update["cancel_pids"] = pids;
      update["cancel_sent_at"] = unix_now();
      info.update(update);
      signal_all(info, SIGTERM);
    } else if (unix_now() - info["cancel_sent_at"].get<double>() >= static_cast<double>(c_.cancel_grace.count())) {
      signal_all(info, SIGKILL);
    }
    return update;
  }

 private:
  static bool group_alive(const json& info) {
    const pid_t pgid = info.value("pgid", 0);
    if (pgid > 0 && (::kill(-pgid, 0) == 0 || errno == EPERM)) return true;
    for (const auto& p : info.value("cancel_pids", json::array()))
      if (process_alive(p["pid"].get<pid_t>(), p["start_time"].get<uint64_t>())) return true;
    return false;
  }

  static void signal_all(const json& info, int sig) {
    const pid_t pgid = info.value("pgid", 0);
    if (pgid > 0) ::kill(-pgid, sig);
    for (const auto& p : info.value("cancel_pids", json::array())) {
      const pid_t pid = p["pid"].get<pid_t>();
      if (process_alive(pid, p["start_time"].get<uint64_t>())) ::kill(pid, sig);
    }
  }

  std::vector<std::string> job_argv(const JobRecord& job, const JobPaths& paths) const {
    std::vector<std::string> argv = {"/bin/sh", "-c", exit_wrapper, "shardq-job", c_.mpirun, "--oversubscribe", "-np",
                                     std::to_string(c_.ranks)};
    for (auto& a : quantize_args(c_, job, paths)) argv.push_back(a);
    return argv;
  }

  json launch_info(pid_t pid, const std::vector<std::string>& argv) const {
    return {{"kind", "local"},
            {"pid", pid},
            {"pgid", pid},
            {"start_time", process_start_time(pid).value_or(0)},
            {"ranks", c_.ranks},
            {"command", json(std::vector<std::string>(argv.begin() + 4, argv.end()))}};
  }

  LauncherConfig c_;
};

// The SLURM job name of a service job: given to sbatch, looked up by find_unrecorded().
std::string slurm_job_name(const JobRecord& job) { return "shardq-" + job.id; }

std::vector<std::string> sbatch_argv(const JobRecord& job, const JobPaths& paths) {
  return {"sbatch", "--parsable", "--job-name=" + slurm_job_name(job), paths.sbatch.string()};
}

class SlurmLauncher final : public Launcher {
 public:
  explicit SlurmLauncher(LauncherConfig c) : c_(std::move(c)) {
    std::ifstream in(c_.slurm_template);
    if (!in) throw io_error(fmt::format("cannot read SLURM template '{}'", c_.slurm_template.string()));
    std::ostringstream ss;
    ss << in.rdbuf();
    template_ = ss.str();
  }
  std::string kind() const override { return "slurm"; }

  json launch(const JobRecord& job, const JobPaths& paths) override {
    std::map<std::string, std::string> vars = {{"NODES", "1"}, {"GPUS_PER_NODE", "1"}, {"CPUS_PER_TASK", "1"},
                                               {"TIME_LIMIT", "1-00:00:00"}, {"RANKS", std::to_string(c_.ranks)}};
    for (const auto& [k, v] : c_.slurm_vars) vars[k] = v;
    const auto args = quantize_args(c_, job, paths);
    vars["JOB_NAME"] = slurm_job_name(job);
    vars["JOB_ID"] = job.id;
    vars["JOB_DIR"] = paths.dir.string();
    vars["SHARDQ_BIN"] = c_.shardq_bin.string();
    vars["SPEC_FILE"] = paths.spec.string();
    vars["PROGRESS_FILE"] = paths.progress.string();
    vars["LOG_FILE"] = paths.log.string();
    vars["EXIT_FILE"] = paths.exit_code.string();
    vars["FORCE_FLAG"] = job.force ? "--force" : "";
    vars["RESUME_FLAG"] = job.spec.value("resume", false) ? "--resume" : "";
    const std::string script = slurm_template_render(template_, vars, c_.slurm_template.string());
    write_file_atomic(paths.sbatch, script);
    ::chmod(paths.sbatch.c_str(), 0755);
    // The name on the command line overrides the template's: find_unrecorded() looks it up.
    const auto out = run_command_capture(sbatch_argv(job, paths), std::chrono::seconds(60));
    if (out.exit_code != 0)
      throw io_error(fmt::format("sbatch '{}' failed (exit {}): {}", paths.sbatch.string(), out.exit_code, trim(out.err)));
    const std::string id = trim(out.out.substr(0, out.out.find(';')));
    if (id.empty() || id.find_first_not_of("0123456789_") != std::string::npos)
      throw io_error(fmt::format("sbatch printed no job id: '{}'", trim(out.out)));
    return {{"kind", "slurm"}, {"slurm_job_id", id}, {"script", paths.sbatch.string()}, {"slurm_state", "PENDING"}};
  }

  // By its job name: sbatch may have queued it just before the service stopped. One that has
  // left the queue without writing its exit status (recover_launch reads that first) is not
  // found, and the job runs again.
  json find_unrecorded(const JobRecord& job, const JobPaths& paths) override {
    // The service's sbatch outlives it (it is not in a job's process group) and may queue the
    // job after this lookup, slurmctld being slow or retrying: until it ends the answer is
    // not known. Asked first, so that an sbatch ending meanwhile has queued what it will.
    const std::vector<std::string> argv = sbatch_argv(job, paths);
    if (const auto pids = processes_with_args({argv.begin() + 1, argv.end()}); !pids.empty())
      throw io_error(fmt::format("the sbatch that submits it (pid {}) is still running", pids.front()));
    const std::string name = slurm_job_name(job);
    const auto q = run_command_capture({"squeue", "-h", "--name", name, "-o", "%i %T"}, std::chrono::seconds(30));
    if (q.exit_code != 0)
      throw io_error(fmt::format("squeue --name {} failed (exit {}): {}", name, q.exit_code, trim(q.err)));
    std::istringstream lines(q.out);
    std::string id, state;
    if (!(lines >> id >> state)) return nullptr;
    if (lines >> std::ws && !lines.eof())
      spdlog::warn("{}", json{{"event", "slurm_jobs_duplicated"}, {"name", name}, {"squeue", trim(q.out)}}.dump());
    return {{"kind", "slurm"}, {"slurm_job_id", id}, {"script", paths.sbatch.string()}, {"slurm_state", state}};
  }

  LaunchPoll poll(const JobRecord& job, const JobPaths& paths) override {
    LaunchPoll r;
    const std::string id = job.launcher_info.value("slurm_job_id", "");
    if (id.empty()) {
      r.finished = true;
      r.detail = "no SLURM job id was recorded for this job";
      return r;
    }
    const auto q = run_command_capture({"squeue", "-h", "-j", id, "-o", "%T"}, std::chrono::seconds(30));
    const std::string state = trim(q.out);
    if (q.exit_code == 0 && !state.empty()) {
      r.info_update["slurm_state"] = state;
      return r;
    }
    if (q.exit_code != 0 && q.err.find("Invalid job id") == std::string::npos) {
      r.info_update["slurm_error"] = trim(q.err);  // controller unreachable: keep waiting
      return r;
    }
    // Gone from the queue: the end state from scontrol (accounting may be off, see
    // ../shared/slurm-local.md), the exit status from what the script wrote.
    const auto s = run_command_capture({"scontrol", "show", "job", id, "-o"}, std::chrono::seconds(30));
    std::smatch m;
    std::string end_state = "UNKNOWN";
    if (s.exit_code == 0 && std::regex_search(s.out, m, std::regex("JobState=(\\S+)"))) end_state = m[1];
    if (s.exit_code == 0 && std::regex_search(s.out, m, std::regex("ExitCode=(\\d+):(\\d+)")))
      r.exit_code = std::stoi(m[1]) != 0 ? std::stoi(m[1]) : (std::stoi(m[2]) != 0 ? 128 + std::stoi(m[2]) : 0);
    if (auto file_code = job_exit_code_read(paths)) r.exit_code = file_code;
    r.info_update["slurm_state"] = end_state;
    r.finished = true;
    r.detail = fmt::format("SLURM job {} ended in state {}", id, end_state);
    return r;
  }

  json cancel(const JobRecord& job) override {
    const std::string id = job.launcher_info.value("slurm_job_id", "");
    if (id.empty()) return json::object();
    const auto& info = job.launcher_info;
    if (info.contains("cancel_sent_at") &&
        unix_now() - info["cancel_sent_at"].get<double>() < static_cast<double>(c_.cancel_grace.count()))
      return json::object();
    const auto out = run_command_capture({"scancel", id}, std::chrono::seconds(30));
    if (out.exit_code != 0) spdlog::warn("scancel {} failed: {}", id, trim(out.err));
    return {{"cancel_sent_at", unix_now()}};
  }

 private:
  LauncherConfig c_;
  std::string template_;
};

}  // namespace

std::string slurm_template_render(const std::string& text, const std::map<std::string, std::string>& vars,
                                  const std::string& template_name) {
  static const std::regex placeholder("\\{\\{([A-Z0-9_]+)\\}\\}");
  static const std::regex safe("[A-Za-z0-9_./:+,=@-]*");
  std::string out;
  auto begin = std::sregex_iterator(text.begin(), text.end(), placeholder);
  size_t last = 0;
  for (auto it = begin; it != std::sregex_iterator(); ++it) {
    const std::string name = (*it)[1];
    const auto v = vars.find(name);
    if (v == vars.end())
      throw io_error(fmt::format("SLURM template '{}': variable {{{{{}}}}} has no value", template_name, name));
    if (!std::regex_match(v->second, safe))
      throw io_error(fmt::format("SLURM template '{}': value of {} ('{}') holds characters unsafe in a batch script",
                                 template_name, name, v->second));
    out.append(text, last, static_cast<size_t>(it->position()) - last);
    out += v->second;
    last = static_cast<size_t>(it->position() + it->length());
  }
  out.append(text, last, std::string::npos);
  return out;
}

std::optional<int> job_exit_code_read(const JobPaths& paths) {
  std::ifstream in(paths.exit_code);
  int code = 0;
  if (in >> code) return code;
  return std::nullopt;
}

std::unique_ptr<Launcher> launcher_create(const LauncherConfig& config) {
  if (config.kind == "local") return std::make_unique<LocalLauncher>(config);
  if (config.kind == "slurm") return std::make_unique<SlurmLauncher>(config);
  throw spec_error("launcher", fmt::format("must be local or slurm, got '{}'", config.kind));
}

}  // namespace shardq::service
