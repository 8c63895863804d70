// JSON form of a job record (see job_record.hpp).
#include "coordinator/service/job_record.hpp"

#include <fmt/format.h>

#include "common/error.hpp"

namespace shardq::service {

using nlohmann::json;

const char* job_state_name(job_state s) {
  switch (s) {
    case job_state::queued: return "queued";
    case job_state::running: return "running";
    case job_state::succeeded: return "succeeded";
    case job_state::failed: return "failed";
    case job_state::cancelled: return "cancelled";
  }
  return "unknown";
}

job_state job_state_from_name(const std::string& name) {
  for (job_state s : {job_state::queued, job_state::running, job_state::succeeded, job_state::failed, job_state::cancelled})
    if (name == job_state_name(s)) return s;
  throw spec_error("state", fmt::format("unknown job state '{}'", name));
}

json job_record_to_json(const JobRecord& j) {
  return {{"id", j.id},
          {"state", job_state_name(j.state)},
          {"phase", j.phase},
          {"layers_done", j.layers_done},
          {"layers_total", j.layers_total},
          {"eta_s", j.eta_s ? json(*j.eta_s) : json(nullptr)},
          {"error", j.error},
          {"launcher", j.launcher},
          {"launcher_info", j.launcher_info},
          {"spec", j.spec},
          {"force", j.force},
          {"attempts", j.attempts},
          {"cancel_requested", j.cancel_requested},
          {"created_at", j.created_at},
          {"started_at", j.started_at},
          {"finished_at", j.finished_at},
          {"progress_offset", j.progress_offset}};
}

JobRecord job_record_from_json(const json& j) {
  JobRecord r;
  r.id = j.at("id").get<std::string>();
  r.state = job_state_from_name(j.at("state").get<std::string>());
  r.phase = j.value("phase", "");
  r.layers_done = j.value("layers_done", 0);
  r.layers_total = j.value("layers_total", 0);
  if (j.contains("eta_s") && j["eta_s"].is_number()) r.eta_s = j["eta_s"].get<double>();
  r.error = j.value("error", "");
  r.launcher = j.at("launcher").get<std::string>();
  r.launcher_info = j.value("launcher_info", json::object());
  r.spec = j.at("spec");
  r.force = j.value("force", false);
  r.attempts = j.value("attempts", 0);
  r.cancel_requested = j.value("cancel_requested", false);
  r.created_at = j.value("created_at", 0.0);
  r.started_at = j.value("started_at", 0.0);
  r.finished_at = j.value("finished_at", 0.0);
  r.progress_offset = j.value("progress_offset", uint64_t{0});
  return r;
}

JobPaths::JobPaths(const std::filesystem::path& state_dir, const std::string& id)
    : dir(state_dir / "jobs" / id),
      record(dir / "job.json"),
      spec(dir / "spec.json"),
      progress(dir / "progress.jsonl"),
      log(dir / "log.txt"),
      exit_code(dir / "exit_code"),
      sbatch(dir / "job.sbatch"),
      mpi_session(dir / "mpi") {}

}  // namespace shardq::service
