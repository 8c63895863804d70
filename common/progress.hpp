// Progress of a long job: phase, layers done / total, rate and ETA.
//   human: one line per update on stderr ("[calibrate] layer 3/32  0.41 layers/s  ETA 1m12s")
//   json:  one JSON object per line on stderr (read by the coordinator service):
//          {"event":"progress","phase":"quantize","layers_done":3,"layers_total":32,
//           "rate":0.41,"eta_s":72.5,"elapsed_s":7.3}
//   quiet: nothing.
// A copy of every JSON line can also be appended to a file (the job's progress file).
#pragma once

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace shardq {

enum class progress_mode { human, json, quiet };
progress_mode progress_mode_from_string(const std::string& s);  // spec_error on unknown

class Progress {
 public:
  explicit Progress(progress_mode mode, std::filesystem::path file = {});
  // Starts a phase with `total` work units (layers). Resets the rate clock.
  void begin_phase(const std::string& phase, int total);
  // Reports `done` units of the current phase.
  void update(int done);
  // Free-form event (e.g. {"event":"done","output":...}); always JSON in json mode.
  void event(const nlohmann::json& j);
  void message(const std::string& text);  // human mode only

  const std::string& phase() const { return phase_; }

 private:
  void emit(const nlohmann::json& j, const std::string& human);
  progress_mode mode_;
  std::filesystem::path file_;
  std::string phase_;
  int total_ = 0;
  std::chrono::steady_clock::time_point job_start_, phase_start_;
};

std::string format_duration(double seconds);  // "1h02m", "3m12s", "4.2s"

}  // namespace shardq
