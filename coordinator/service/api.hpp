// The REST API of `shardq serve` (../shared/DESIGN.md, "Coordinator REST API") as a pure
// function from an HTTP request to a response: no sockets here, so it is tested without a
// network; server.hpp does the I/O. Errors are {"error": {"code", "message", "field"}}.
//
//   POST   /v1/jobs[?force=true]   body = job spec → 201 {"id", "state"}; force lets the job
//                                  replace a checkpoint in a non-empty output (--force)
//   GET    /v1/jobs                {"jobs": [...]}
//   GET    /v1/jobs/{id}           state, phase, progress {layers_done, layers_total}, eta_s,
//                                  error, launcher {kind, pid | slurm_job_id, ...}
//   GET    /v1/jobs/{id}/manifest  the checkpoint's manifest.json once written (404 before)
//   GET    /v1/jobs/{id}/log[?bytes=N]  the last N bytes (default 64 KiB) of the job's log
//   DELETE /v1/jobs/{id}           queued: 200 cancelled; running: 202, ends as cancelled
//   POST   /v1/jobs/{id}/resume    failed or cancelled → 202 queued again with "resume": true
//   GET    /healthz                no token needed
//   GET    /metrics                Prometheus text
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <boost/beast/http.hpp>

#include "coordinator/service/job_manager.hpp"

namespace shardq::service {

namespace http = boost::beast::http;
using http_request = http::request<http::string_body>;
using http_response = http::response<http::string_body>;

// Bearer tokens, one per line ('#' comments and blank lines skipped). io_error when the file
// cannot be read or holds no token.
std::vector<std::string> tokens_read_file(const std::filesystem::path& path);
// Equality in time independent of where the strings differ (and of a length mismatch).
bool token_equal(std::string_view a, std::string_view b);

// Request counters and a latency histogram, rendered with the job gauges by GET /metrics.
class Metrics {
 public:
  void record(std::string_view method, std::string_view route, unsigned status, double seconds);
  std::string render(const JobManager& jobs) const;

 private:
  static constexpr double bounds_[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
  mutable std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, unsigned>, long> requests_;
  std::map<std::string, std::vector<long>> buckets_;  // per route, cumulative counts per bound
  std::map<std::string, double> sum_;
  std::map<std::string, long> count_;
};

// The route a target matches, with ids folded ("/v1/jobs/{id}/log"), for metrics and logs.
std::string route_label(std::string_view target);

// A JSON error response.
http_response error_response(unsigned status, const std::string& code, const std::string& message,
                             const std::string& field, unsigned version, bool keep_alive);

class Api {
 public:
  Api(JobManager& jobs, std::vector<std::string> tokens, const Metrics& metrics)
      : jobs_(jobs), tokens_(std::move(tokens)), metrics_(metrics) {}
  http_response handle_request(const http_request& req) const;
  // Whether the body of a request with this header is worth reading: its route needs no
  // token (/healthz), or it carries a right one.
  bool may_send_body(const http::request_header<>& header) const;
  // Whether answering may wait on the filesystem: a submission or resume reads the model's
  // files, the manifest and log routes a job's output and log. The server answers those off
  // its I/O threads, so that a stalled filesystem (an NFS or Lustre server that stops
  // answering) does not stop it answering the rest.
  static bool reads_files(const http::request_header<>& header);

 private:
  http_response route(const http_request& req) const;
  bool authorized(const http::fields& fields) const;

  JobManager& jobs_;
  std::vector<std::string> tokens_;
  const Metrics& metrics_;
};

}  // namespace shardq::service
