// The coordinator service's job manager (see job_manager.hpp).
#include "coordinator/service/job_manager.hpp"

#include <algorithm>
#include <fstream>
#include <random>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "common/fault.hpp"
#include "common/json_text.hpp"
#include "common/job_spec.hpp"
#include "common/log.hpp"
#include "common/output_lock.hpp"
#include "coordinator/job_plan.hpp"
#include "coordinator/resume.hpp"

namespace shardq::service {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* manifest_name = "manifest.json";

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string new_job_id() {
  static std::mutex m;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lock(m);
  return fmt::format("{:016x}", rng());
}

bool inside(const fs::path& path, const fs::path& root) {
  auto p = path.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++p) {
    if (r->empty()) continue;  // trailing separator of the root
    if (p == path.end() || *p != *r) return false;
  }
  return true;
}

// Two jobs' outputs collide when one is the other or holds it (both resolved by
// resolve_in_data_roots).
bool outputs_overlap(const fs::path& a, const fs::path& b) { return inside(a, b) || inside(b, a); }

// Complete lines of `file` after byte `offset`; advances offset past them.
std::vector<json> progress_read(const fs::path& file, uint64_t& offset) {
  std::vector<json> out;
  std::ifstream in(file, std::ios::binary);
  if (!in) return out;
  in.seekg(static_cast<std::streamoff>(offset));
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // no newline yet: the writer is mid-line
    offset += line.size() + 1;
    // The job's own lines; one that does not parse (a crash's torn write) is skipped.
    std::string why;
    if (json ev = parse_json_text(line, why); !ev.is_discarded()) out.push_back(std::move(ev));
  }
  return out;
}

void progress_apply(JobRecord& job, const json& ev) {
  const std::string event = ev.value("event", "");
  if (event == "plan") {
    job.layers_total = ev.value("layers", job.layers_total);
    job.phase = "plan";
  } else if (event == "progress") {
    job.phase = ev.value("phase", job.phase);
    job.eta_s = ev.contains("eta_s") && ev["eta_s"].is_number() ? std::optional(ev["eta_s"].get<double>()) : std::nullopt;
    // Layers quantized: the quantize phase counts layers (the calibrate phase of the
    // pipeline schedule counts micro-batches); never let the count go back.
    if (job.phase == "quantize") job.layers_done = std::max(job.layers_done, ev.value("layers_done", 0));
  } else if (event == "done") {
    job.phase = "done";
    job.layers_done = job.layers_total;
    job.eta_s = 0.0;
  }
}

// The last line of the log that reports an error: the most useful reason a job failed.
std::string log_error_line(const fs::path& log) {
  std::ifstream in(log, std::ios::binary);
  if (!in) return {};
  in.seekg(0, std::ios::end);
  const auto size = static_cast<int64_t>(in.tellg());
  in.seekg(std::max<int64_t>(0, size - 16384));
  std::string line, found;
  while (std::getline(in, line))
    if (line.find("error") != std::string::npos) found = line;
  return one_line(found);
}

// A cancel that ends the job before (or without) a launch to stop.
void end_cancelled(JobRecord& job) {
  job.state = job_state::cancelled;
  job.finished_at = unix_now();
  job.error = "cancelled on request";
}

}  // namespace

fs::path resolve_in_data_roots(const std::string& path, const std::string& field, const std::vector<fs::path>& roots) {
  if (roots.empty()) throw api_error(403, "forbidden_path", "the service has no data root", field);
  std::error_code ec;
  fs::path p(path);
  if (p.is_relative()) p = roots.front() / p;
  // weakly_canonical resolves the symlinks of the part that exists and removes "..";
  // a symlink that points outside (or a ".." that climbs out) fails the prefix test.
  fs::path canonical = fs::weakly_canonical(p, ec);
  if (ec) throw api_error(403, "forbidden_path", fmt::format("'{}' cannot be resolved: {}", path, ec.message()), field);
  // weakly_canonical keeps the "/" of "out/" when out does not exist yet: one name per directory.
  if (!canonical.has_filename() && canonical.has_relative_path()) canonical = canonical.parent_path();
  for (const auto& root : roots)
    if (inside(canonical, root)) return canonical;
  throw api_error(403, "forbidden_path", fmt::format("'{}' resolves to '{}', outside the data roots", path, canonical.string()),
                  field);
}

JobManager::JobManager(ServiceConfig config) : config_(std::move(config)) {
  for (auto& root : config_.data_roots) {
    std::error_code ec;
    fs::path resolved = fs::canonical(root, ec);
    if (ec) throw io_error(fmt::format("data root '{}': {}", root.string(), ec.message()));
    root = std::move(resolved);
  }
  fs::create_directories(config_.state_dir / "jobs");
  launchers_[config_.launcher.kind] = launcher_create(config_.launcher);
  recover();
}

JobManager::~JobManager() { stop(); }

Launcher* JobManager::launcher_for(const std::string& kind) {
  auto it = launchers_.find(kind);
  if (it != launchers_.end()) return it->second.get();
  if (kind == "local") {
    LauncherConfig c = config_.launcher;
    c.kind = "local";
    return (launchers_["local"] = launcher_create(c)).get();
  }
  return nullptr;
}

void JobManager::recover() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(config_.state_dir / "jobs", ec)) {
    const JobPaths paths(config_.state_dir, entry.path().filename().string());
    if (std::error_code missing; !fs::exists(paths.record, missing)) continue;
    try {
      JobRecord job = job_record_from_json(json_file_read(paths.record, paths.record.string()));
      // Every view of a job reads its spec: a record whose spec does not parse would fail
      // each listing, submission and supervisor pass, so it is skipped like an unreadable one.
      job_spec_from_json(job.spec);
      if (job.state == job_state::running && !job.launcher_info.contains("kind")) {
        recover_launch(job);
        save(job);
      }
      spdlog::info("{}", json{{"event", "job_recovered"}, {"id", job.id}, {"state", job_state_name(job.state)}}.dump());
      jobs_[job.id] = std::move(job);
    } catch (const std::exception& e) {
      spdlog::warn("{}", json{{"event", "job_unreadable"}, {"file", paths.record.string()}, {"error", one_line(e.what())}}.dump());
    }
  }
}

// The service stopped between choosing the job and recording its launch. Once the launch has
// begun its processes or SLURM job may exist: a second launch would run two writers on one
// output, so the launcher looks for it first.
void JobManager::recover_launch(JobRecord& job) {
  if (!job.launcher_info.contains("launch_started_at")) {
    job.state = job_state::queued;
    return;
  }
  // Its wrapper wrote an exit status (start_queued removes the last attempt's): this attempt
  // ran to its end while the service was down.
  if (const auto code = job_exit_code_read(paths(job.id))) {
    LaunchPoll ended;
    ended.finished = true;
    ended.exit_code = code;
    job.launcher_info = {{"kind", job.launcher}, {"found", "exit_code"}};
    finish(job, ended);
    return;
  }
  Launcher* launcher = launcher_for(job.launcher);
  if (!launcher) {
    job.state = job_state::failed;
    job.finished_at = unix_now();
    job.error = fmt::format("the service stopped while launching the job and now runs without the {} launcher, so it "
                            "cannot tell whether the job started; resume it once that is known",
                            job.launcher);
    return;
  }
  json found;
  try {
    found = launcher->find_unrecorded(job, paths(job.id));
  } catch (const std::exception& e) {
    // The launcher cannot be asked now (slurmctld down or failing over). Failing the job would
    // show one that may be running as failed, and its resume would queue a second writer:
    // it stays running, its launch unresolved, and the supervisor asks again each pass.
    const std::string error = one_line(e.what());
    if (job.launcher_info.value("lookup_error", "") != error)
      spdlog::warn("{}", json{{"event", "job_launch_unresolved"}, {"id", job.id}, {"error", error}}.dump());
    job.launcher_info["lookup_error"] = error;
    return;
  }
  if (found.is_null()) {
    job.launcher_info = json::object();
    if (job.cancel_requested) end_cancelled(job);
    else job.state = job_state::queued;
    return;
  }
  job.launcher_info = std::move(found);
  spdlog::info("{}", json{{"event", "job_launch_found"}, {"id", job.id}, {"launcher", job.launcher_info}}.dump());
}

// recover_launch again for a job whose lookup failed at recovery: the launcher's commands run
// outside the lock, then the result replaces the record unless the job changed meanwhile
// (only a cancel can reach it: it is running and has no launch to poll).
void JobManager::resolve_launch(const JobRecord& job) {
  JobRecord resolved = job;
  recover_launch(resolved);
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(job.id);
  if (it == jobs_.end() || it->second.state != job_state::running || it->second.launcher_info.contains("kind")) return;
  if (it->second.cancel_requested && !resolved.cancel_requested) {
    resolved.cancel_requested = true;
    if (resolved.state == job_state::queued) end_cancelled(resolved);
  }
  if (job_record_to_json(resolved) == job_record_to_json(it->second)) return;
  it->second = std::move(resolved);
  save(it->second);  // queued again: start_queued, next in this pass, launches it
}

void JobManager::save(const JobRecord& job) const {
  write_file_atomic(paths(job.id).record, job_record_to_json(job).dump(2) + "\n");
}

void JobManager::start() {
  std::lock_guard lock(mutex_);
  if (supervisor_.joinable()) return;
  stopping_ = false;
  supervisor_ = std::thread([this] { supervise(); });
}

void JobManager::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (supervisor_.joinable()) supervisor_.join();
}

void JobManager::check_output_free(const std::string& output, const std::string& self) const {
  for (const auto& [id, other] : jobs_) {
    const std::string other_output = other.spec.value("output", "");
    if (id != self && !job_state_final(other.state) && outputs_overlap(other_output, output))
      throw api_error(409, "output_in_use",
                      fmt::format("job {} is writing '{}', which is, holds or lies in '{}'", id, other_output, output),
                      "output");
  }
  // A job this service did not launch (a user's mpirun, a SLURM job submitted by hand).
  if (const auto holder = output_lock_holder(output))
    throw api_error(409, "output_in_use", output_busy_message(output, *holder), "output");
}

void JobManager::check_plan(const JobSpec& spec, bool force) const {
  fault_point("check_plan", 0, -1);  // tests/service: a filesystem that stops answering
  try {
    job_spec_check_paths(spec, force);
    // What the job would refuse from the spec and the model's files (tensors, allocation,
    // calibration.path) is refused now; plan_from_spec reads the config and headers only.
    const JobPlan plan = plan_from_spec(spec, config_.launcher.ranks);
    resume_check_target(plan);
  } catch (const spec_error& e) {
    throw api_error(400, "invalid_spec", e.message(), e.field());
  } catch (const unsupported_error& e) {
    throw api_error(400, "unsupported_model", e.what(), "model");
  } catch (const io_error& e) {
    throw api_error(400, "invalid_model", e.what(), "model");
  }
}

JobRecord JobManager::submit(const json& body, bool force) {
  JobSpec spec;
  try {
    spec = job_spec_from_json(body);
  } catch (const spec_error& e) {
    throw api_error(400, "invalid_spec", e.message(), e.field());
  }
  spec.model = resolve_in_data_roots(spec.model, "model", config_.data_roots).string();
  spec.output = resolve_in_data_roots(spec.output, "output", config_.data_roots).string();
  if (!spec.calibration.path.empty())
    spec.calibration.path = resolve_in_data_roots(spec.calibration.path, "calibration.path", config_.data_roots).string();
  check_plan(spec, force);
  JobRecord job;
  job.spec = job_spec_to_json(spec);
  job.force = force;
  job.created_at = unix_now();
  {
    std::lock_guard lock(mutex_);
    check_output_free(spec.output, "");
    do job.id = new_job_id();
    while (jobs_.count(job.id));
    const JobPaths p = paths(job.id);
    fs::create_directories(p.dir);
    write_file_atomic(p.spec, job.spec.dump(2) + "\n");
    save(job);
    jobs_[job.id] = job;
  }
  spdlog::info("{}", json{{"event", "job_submitted"}, {"id", job.id}, {"output", spec.output}, {"force", force}}.dump());
  wake_.notify_all();
  return job;
}

std::optional<JobRecord> JobManager::get(const std::string& id) const {
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second;
}

std::vector<JobRecord> JobManager::list() const {
  std::lock_guard lock(mutex_);
  std::vector<JobRecord> out;
  for (const auto& [id, job] : jobs_) out.push_back(job);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.created_at != b.created_at ? a.created_at < b.created_at : a.id < b.id;
  });
  return out;
}

JobRecord JobManager::cancel(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) throw api_error(404, "not_found", fmt::format("no job '{}'", id));
  JobRecord& job = it->second;
  if (job_state_final(job.state))
    throw api_error(409, "conflict", fmt::format("job {} has already ended ({})", id, job_state_name(job.state)));
  if (job.state == job_state::queued) end_cancelled(job);
  else job.cancel_requested = true;
  save(job);
  spdlog::info("{}", json{{"event", "job_cancel"}, {"id", id}, {"state", job_state_name(job.state)}}.dump());
  wake_.notify_all();
  return job;
}

JobRecord JobManager::resume(const std::string& id) {
  // Under the lock: the job, and that it has ended without succeeding.
  const auto resumable = [&]() -> JobRecord& {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) throw api_error(404, "not_found", fmt::format("no job '{}'", id));
    JobRecord& job = it->second;
    if (job.state != job_state::failed && job.state != job_state::cancelled)
      throw api_error(409, "conflict", fmt::format("job {} is {}; only failed or cancelled jobs resume", id, job_state_name(job.state)));
    return job;
  };
  JobSpec spec;
  bool force = false;
  {
    std::lock_guard lock(mutex_);
    const JobRecord& job = resumable();
    spec = job_spec_from_json(job.spec);
    force = job.force;
  }
  // Checked as a submission is, outside the lock: since the job ended its model or
  // calibration file may have gone, or another job's checkpoint may fill its output.
  spec.resume = true;
  try {
    check_plan(spec, force);
  } catch (const api_error& e) {
    throw api_error(409, "cannot_resume", fmt::format("job {} cannot resume: {}", id, e.what()), e.field());
  }
  JobRecord copy;
  {
    std::lock_guard lock(mutex_);
    JobRecord& job = resumable();
    check_output_free(job.spec.value("output", ""), id);
    job.spec["resume"] = true;
    write_file_atomic(paths(id).spec, job.spec.dump(2) + "\n");
    job.state = job_state::queued;
    job.error.clear();
    job.cancel_requested = false;
    job.finished_at = 0;
    save(job);
    copy = job;
  }
  spdlog::info("{}", json{{"event", "job_resume"}, {"id", id}}.dump());
  wake_.notify_all();
  return copy;
}

std::map<job_state, int> JobManager::count_by_state() const {
  std::lock_guard lock(mutex_);
  std::map<job_state, int> out;
  for (job_state s : {job_state::queued, job_state::running, job_state::succeeded, job_state::failed, job_state::cancelled})
    out[s] = 0;
  for (const auto& [id, job] : jobs_) ++out[job.state];
  return out;
}

long JobManager::layers_quantized() const {
  std::lock_guard lock(mutex_);
  long n = 0;
  for (const auto& [id, job] : jobs_) n += job.layers_done;
  return n;
}

void JobManager::supervise() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    try {
      poll_running();
      start_queued();
    } catch (const std::exception& e) {
      spdlog::error("{}", json{{"event", "supervisor_error"}, {"error", one_line(e.what())}}.dump());
    }
    lock.lock();
    wake_.wait_for(lock, config_.poll_interval);
  }
}

void JobManager::poll_running() {
  std::vector<JobRecord> running;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [id, job] : jobs_)
      if (job.state == job_state::running) running.push_back(job);
  }
  // Launchers run commands (squeue, scancel) and read files: outside the lock, then the
  // fields the supervisor owns are merged into the current record.
  for (JobRecord& job : running) {
    // One job's failure (a launcher command, a full disk at save) must not stop the others'.
    try {
      if (job.launcher_info.contains("kind")) poll_one(job);
      else resolve_launch(job);
    } catch (const std::exception& e) {
      spdlog::error("{}", json{{"event", "supervisor_error"}, {"id", job.id}, {"error", one_line(e.what())}}.dump());
    }
  }
}

void JobManager::poll_one(JobRecord& job) {
  Launcher* launcher = launcher_for(job.launcher);
  const JobPaths p = paths(job.id);
  json info_update = json::object();
  LaunchPoll poll;
  if (!launcher) {
    poll.finished = true;
    poll.detail = fmt::format("this service runs without the {} launcher the job was started with", job.launcher);
  } else {
    if (job.cancel_requested) {
      info_update = launcher->cancel(job);
      job.launcher_info.update(info_update);
    }
    poll = launcher->poll(job, p);
    info_update.update(poll.info_update);
  }
  for (const auto& ev : progress_read(p.progress, job.progress_offset)) progress_apply(job, ev);

  std::lock_guard lock(mutex_);
  auto it = jobs_.find(job.id);
  if (it == jobs_.end() || it->second.state != job_state::running) return;
  JobRecord& cur = it->second;
  const bool changed = cur.progress_offset != job.progress_offset || !info_update.empty() || poll.finished ||
                       cur.cancel_requested != job.cancel_requested;
  cur.launcher_info.update(info_update);
  cur.phase = job.phase;
  cur.layers_done = job.layers_done;
  cur.layers_total = job.layers_total;
  cur.eta_s = job.eta_s;
  cur.progress_offset = job.progress_offset;
  if (poll.finished) finish(cur, poll);
  if (changed) save(cur);
}

void JobManager::finish(JobRecord& job, const LaunchPoll& poll) const {
  std::error_code ec;
  const bool manifest = fs::is_regular_file(fs::path(job.spec.value("output", "")) / manifest_name, ec);
  const std::string slurm_state = job.launcher_info.value("slurm_state", "");
  job.finished_at = unix_now();
  job.eta_s.reset();
  if (job.cancel_requested) {
    job.state = job_state::cancelled;
    job.error = "cancelled on request";
  } else if (manifest && poll.exit_code == 0) {
    // Only a known exit status 0 counts: a manifest beside a killed job is an earlier job's
    // (quantize withdraws it only once its plan is made).
    job.state = job_state::succeeded;
    job.phase = "done";
    job.layers_done = job.layers_total;
    job.error.clear();
  } else if (slurm_state.rfind("CANCELLED", 0) == 0) {
    job.state = job_state::cancelled;
    job.error = "cancelled outside the service (scancel)";
  } else {
    job.state = job_state::failed;
    if (poll.exit_code == 0) job.error = "the job exited with status 0 but wrote no manifest.json";
    else if (poll.exit_code) job.error = fmt::format("shardq quantize exited with status {}", *poll.exit_code);
    else job.error = poll.detail;
    if (const auto line = log_error_line(paths(job.id).log); !line.empty()) job.error += ": " + line;
  }
  spdlog::info("{}", json{{"event", "job_finished"}, {"id", job.id}, {"state", job_state_name(job.state)},
                          {"exit_code", poll.exit_code ? json(*poll.exit_code) : json(nullptr)}, {"error", job.error}}
                         .dump());
}

void JobManager::start_queued() {
  for (;;) {
    JobRecord job;
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      int running = 0;
      const JobRecord* next = nullptr;
      for (const auto& [id, j] : jobs_) {
        if (j.state == job_state::running) ++running;
        if (j.state == job_state::queued && (!next || j.created_at < next->created_at)) next = &j;
      }
      if (!next || running >= config_.max_running) return;
      JobRecord& cur = jobs_[next->id];
      const JobPaths p = paths(cur.id);
      // A new attempt: fresh progress and exit status; the log keeps every attempt.
      std::error_code ec;
      fs::remove(p.exit_code, ec);
      std::ofstream(p.progress, std::ios::trunc).flush();
      cur.state = job_state::running;
      cur.launcher = config_.launcher.kind;
      cur.started_at = unix_now();
      cur.launcher_info = {{"launch_started_at", cur.started_at}};
      cur.attempts += 1;
      cur.phase.clear();
      cur.layers_done = 0;
      cur.eta_s.reset();
      cur.progress_offset = 0;
      save(cur);
      job = cur;
    }
    json info;
    std::string failure;
    try {
      info = launcher_for(job.launcher)->launch(job, paths(job.id));
    } catch (const std::exception& e) {
      failure = one_line(e.what());
    }
    fault_point("launched", 0, -1);  // tests/service: the service dies before it records the launch
    std::lock_guard lock(mutex_);
    JobRecord& cur = jobs_[job.id];
    if (failure.empty()) {
      cur.launcher_info = info;
      spdlog::info("{}", json{{"event", "job_started"}, {"id", cur.id}, {"launcher", info}}.dump());
    } else {
      cur.state = job_state::failed;
      cur.error = "launch failed: " + failure;
      cur.finished_at = unix_now();
      spdlog::error("{}", json{{"event", "job_launch_failed"}, {"id", cur.id}, {"error", failure}}.dump());
    }
    save(cur);
  }
}

}  // namespace shardq::service
