#include "common/progress.hpp"

#include <cmath>
#include <fstream>

#include <fmt/format.h>

#include "common/error.hpp"

namespace shardq {

progress_mode progress_mode_from_string(const std::string& s) {
  if (s == "human") return progress_mode::human;
  if (s == "json") return progress_mode::json;
  if (s == "quiet" || s == "none") return progress_mode::quiet;
  throw spec_error("progress", fmt::format("must be human, json or quiet, got '{}'", s));
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 60) return fmt::format("{:.1f}s", s);
  const auto total = static_cast<long>(s + 0.5);
  if (total < 3600) return fmt::format("{}m{:02}s", total / 60, total % 60);
  return fmt::format("{}h{:02}m", total / 3600, (total % 3600) / 60);
}

Progress::Progress(progress_mode mode, std::filesystem::path file)
    : mode_(mode), file_(std::move(file)), job_start_(std::chrono::steady_clock::now()), phase_start_(job_start_) {}

void Progress::begin_phase(const std::string& phase, int total) {
  phase_ = phase;
  total_ = total;
  phase_start_ = std::chrono::steady_clock::now();
  update(0);
}

void Progress::update(int done) {
  using secs = std::chrono::duration<double>;
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = secs(now - phase_start_).count();
  const double rate = done > 0 && elapsed > 0 ? done / elapsed : 0.0;
  const double eta = rate > 0 ? (total_ - done) / rate : -1.0;
  nlohmann::json j = {{"event", "progress"},          {"phase", phase_},
                      {"layers_done", done},          {"layers_total", total_},
                      {"rate", rate},                 {"elapsed_s", secs(now - job_start_).count()}};
  j["eta_s"] = eta >= 0 ? nlohmann::json(eta) : nlohmann::json(nullptr);
  emit(j, fmt::format("[{}] layer {}/{}  {:.2f} layers/s  ETA {}", phase_, done, total_, rate,
                      eta >= 0 ? format_duration(eta) : "?"));
}

void Progress::event(const nlohmann::json& j) { emit(j, ""); }

void Progress::message(const std::string& text) {
  if (mode_ == progress_mode::human) std::fprintf(stderr, "%s\n", text.c_str());
}

void Progress::emit(const nlohmann::json& j, const std::string& human) {
  const std::string line = j.dump();
  if (mode_ == progress_mode::json) {
    std::fprintf(stderr, "%s\n", line.c_str());
  } else if (mode_ == progress_mode::human && !human.empty()) {
    std::fprintf(stderr, "%s\n", human.c_str());
  }
  std::fflush(stderr);
  if (!file_.empty()) {
    std::ofstream out(file_, std::ios::app);
    out << line << '\n';
  }
}

}  // namespace shardq
