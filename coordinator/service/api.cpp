// The REST API of `shardq serve` (see api.hpp).
#include "coordinator/service/api.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/json_text.hpp"
#include "common/unique_fd.hpp"

namespace shardq::service {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Target {
  std::vector<std::string> segments;      // "/v1/jobs/ab/log" → {"v1", "jobs", "ab", "log"}
  std::map<std::string, std::string> query;
};

Target parse_target(std::string_view target) {
  Target t;
  // RFC 9112 §3.2.2: a server accepts the absolute form ("http://host:port/path", what a client
  // speaking through a proxy sends) and routes by its path.
  for (const std::string_view scheme : {std::string_view("http://"), std::string_view("https://")}) {
    if (target.size() >= scheme.size() && boost::beast::iequals({target.data(), scheme.size()}, {scheme.data(), scheme.size()})) {
      const auto slash = target.find_first_of("/?", scheme.size());
      target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
      break;
    }
  }
  const auto q = target.find('?');
  const std::string_view path = target.substr(0, q);
  size_t i = 0;
  while (i < path.size()) {
    const auto j = path.find('/', i);
    const auto seg = path.substr(i, j == std::string_view::npos ? std::string_view::npos : j - i);
    if (!seg.empty()) t.segments.emplace_back(seg);
    if (j == std::string_view::npos) break;
    i = j + 1;
  }
  if (q != std::string_view::npos) {
    std::istringstream in(std::string(target.substr(q + 1)));
    std::string kv;
    while (std::getline(in, kv, '&')) {
      const auto eq = kv.find('=');
      t.query[kv.substr(0, eq)] = eq == std::string::npos ? "" : kv.substr(eq + 1);
    }
  }
  return t;
}

bool valid_job_id(const std::string& id) {
  return id.size() == 16 && id.find_first_not_of("0123456789abcdef") == std::string::npos;
}

json job_view(const JobRecord& j, bool with_spec) {
  json launcher = j.launcher_info;
  launcher["kind"] = j.launcher.empty() ? json(nullptr) : json(j.launcher);
  json v = {{"id", j.id},
            {"state", job_state_name(j.state)},
            {"phase", j.phase},
            {"progress", {{"layers_done", j.layers_done}, {"layers_total", j.layers_total}}},
            {"eta_s", j.eta_s ? json(*j.eta_s) : json(nullptr)},
            {"error", j.error.empty() ? json(nullptr) : json(j.error)},
            {"launcher", launcher},
            {"output", j.spec.value("output", "")},
            {"force", j.force},
            {"resume", j.spec.value("resume", false)},
            {"attempts", j.attempts},
            {"cancel_requested", j.cancel_requested},
            {"created_at", j.created_at},
            {"started_at", j.started_at == 0 ? json(nullptr) : json(j.started_at)},
            {"finished_at", j.finished_at == 0 ? json(nullptr) : json(j.finished_at)}};
  if (with_spec) v["spec"] = j.spec;
  return v;
}

http_response make_response(unsigned status, std::string body, const char* content_type, const http_request& req) {
  http_response res{static_cast<http::status>(status), req.version()};
  res.set(http::field::server, "shardq");
  res.set(http::field::content_type, content_type);
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

http_response json_response(unsigned status, const json& body, const http_request& req) {
  return make_response(status, body.dump() + "\n", "application/json", req);
}

// The manifest a job's output holds: a regular file, not followed through a symlink, never
// a FIFO or device that would block or stream forever on an HTTP thread, and of sane size
// (a 400B model's manifest is under 1 MB).
constexpr int64_t max_manifest_bytes = int64_t{64} << 20;

std::optional<std::string> read_manifest_file(const fs::path& file) {
  const UniqueFd fd{::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)};
  if (!fd) return std::nullopt;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > max_manifest_bytes) return std::nullopt;
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::read(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    done += static_cast<size_t>(n);
  }
  return text;
}

std::string read_tail(const fs::path& file, int64_t max_bytes) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return {};
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  const int64_t start = std::max<int64_t>(0, size - max_bytes);
  in.seekg(start);
  std::string out(static_cast<size_t>(size - start), '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  return out;
}

}  // namespace

std::vector<std::string> tokens_read_file(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw io_error(fmt::format("cannot read token file '{}'", path.string()));
  std::vector<std::string> tokens;
  std::string line;
  while (std::getline(in, line)) {
    const auto b = line.find_first_not_of(" \t\r");
    const auto e = line.find_last_not_of(" \t\r");
    if (b == std::string::npos || line[b] == '#') continue;
    tokens.push_back(line.substr(b, e - b + 1));
  }
  if (tokens.empty()) throw io_error(fmt::format("token file '{}' holds no token", path.string()));
  return tokens;
}

bool token_equal(std::string_view a, std::string_view b) {
  // Every byte of the longer string is visited whatever the contents, so the time taken
  // tells nothing about how much of a guess was right.
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

void Metrics::record(std::string_view method, std::string_view route, unsigned status, double seconds) {
  // Only the methods HTTP defines become labels: a client inventing names must not add series.
  const bool known = http::string_to_verb({method.data(), method.size()}) != http::verb::unknown;
  std::lock_guard lock(mutex_);
  ++requests_[{known ? std::string(method) : std::string("other"), std::string(route), status}];
  auto& b = buckets_[std::string(route)];
  b.resize(std::size(bounds_), 0);
  for (size_t i = 0; i < std::size(bounds_); ++i)
    if (seconds <= bounds_[i]) ++b[i];
  sum_[std::string(route)] += seconds;
  ++count_[std::string(route)];
}

std::string Metrics::render(const JobManager& jobs) const {
  std::string out;
  out += "# HELP shardq_jobs Jobs in the store by state.\n# TYPE shardq_jobs gauge\n";
  for (const auto& [state, n] : jobs.count_by_state()) out += fmt::format("shardq_jobs{{state=\"{}\"}} {}\n", job_state_name(state), n);
  out += "# HELP shardq_layers_quantized Decoder layers quantized by the current attempt of every job.\n"
         "# TYPE shardq_layers_quantized gauge\n";
  out += fmt::format("shardq_layers_quantized {}\n", jobs.layers_quantized());
  std::lock_guard lock(mutex_);
  out += "# HELP shardq_http_requests_total HTTP requests answered.\n# TYPE shardq_http_requests_total counter\n";
  for (const auto& [key, n] : requests_)
    out += fmt::format("shardq_http_requests_total{{method=\"{}\",route=\"{}\",code=\"{}\"}} {}\n", std::get<0>(key),
                       std::get<1>(key), std::get<2>(key), n);
  out += "# HELP shardq_http_request_duration_seconds Time from a request read to its response written.\n"
         "# TYPE shardq_http_request_duration_seconds histogram\n";
  for (const auto& [route, b] : buckets_) {
    for (size_t i = 0; i < std::size(bounds_); ++i)
      out += fmt::format("shardq_http_request_duration_seconds_bucket{{route=\"{}\",le=\"{}\"}} {}\n", route, bounds_[i], b[i]);
    out += fmt::format("shardq_http_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {}\n", route, count_.at(route));
    out += fmt::format("shardq_http_request_duration_seconds_sum{{route=\"{}\"}} {}\n", route, sum_.at(route));
    out += fmt::format("shardq_http_request_duration_seconds_count{{route=\"{}\"}} {}\n", route, count_.at(route));
  }
  return out;
}

std::string route_label(std::string_view target) {
  const Target t = parse_target(target);
  const auto& s = t.segments;
  if (s.size() == 1 && (s[0] == "healthz" || s[0] == "metrics")) return "/" + s[0];
  if (s.size() >= 2 && s[0] == "v1" && s[1] == "jobs") {
    if (s.size() == 2) return "/v1/jobs";
    if (s.size() == 3) return "/v1/jobs/{id}";
    if (s.size() == 4 && (s[3] == "manifest" || s[3] == "log" || s[3] == "resume")) return "/v1/jobs/{id}/" + s[3];
  }
  return "other";
}

http_response error_response(unsigned status, const std::string& code, const std::string& message, const std::string& field,
                             unsigned version, bool keep_alive) {
  json e = {{"code", code}, {"message", message}};
  e["field"] = field.empty() ? json(nullptr) : json(field);
  http_response res{static_cast<http::status>(status), version};
  res.set(http::field::server, "shardq");
  res.set(http::field::content_type, "application/json");
  if (status == 401) res.set(http::field::www_authenticate, "Bearer realm=\"shardq\"");
  res.keep_alive(keep_alive);
  res.body() = json{{"error", e}}.dump() + "\n";
  res.prepare_payload();
  return res;
}

bool Api::may_send_body(const http::request_header<>& header) const {
  return route_label(std::string_view(header.target().data(), header.target().size())) == "/healthz" || authorized(header);
}

bool Api::reads_files(const http::request_header<>& header) {
  const std::string route = route_label(std::string_view(header.target().data(), header.target().size()));
  if (header.method() == http::verb::post) return route == "/v1/jobs" || route == "/v1/jobs/{id}/resume";
  return route == "/v1/jobs/{id}/manifest" || route == "/v1/jobs/{id}/log";
}

bool Api::authorized(const http::fields& fields) const {
  const auto it = fields.find(http::field::authorization);
  if (it == fields.end()) return false;
  const std::string_view value(it->value().data(), it->value().size());
  // The scheme name is case-insensitive (RFC 7235 section 2.1).
  constexpr std::string_view scheme = "Bearer ";
  if (value.size() <= scheme.size() || !boost::beast::iequals({value.data(), scheme.size()}, {scheme.data(), scheme.size()}))
    return false;
  const std::string_view token = value.substr(scheme.size());
  bool ok = false;
  for (const auto& t : tokens_) ok |= token_equal(token, t);
  return ok;
}

http_response Api::handle_request(const http_request& req) const {
  try {
    return route(req);
  } catch (const api_error& e) {
    return error_response(static_cast<unsigned>(e.status()), e.code(), e.what(), e.field(), req.version(), req.keep_alive());
  } catch (const std::exception& e) {
    return error_response(500, "internal", e.what(), "", req.version(), req.keep_alive());
  }
}

http_response Api::route(const http_request& req) const {
  const Target t = parse_target(std::string_view(req.target().data(), req.target().size()));
  const auto& s = t.segments;
  const auto method = req.method();
  auto allow = [&](std::initializer_list<http::verb> verbs) {
    if (std::find(verbs.begin(), verbs.end(), method) != verbs.end()) return;
    std::string names;
    for (auto v : verbs) names += (names.empty() ? "" : ", ") + std::string(http::to_string(v));
    throw api_error(405, "method_not_allowed", fmt::format("{} is not allowed here; use {}", std::string(req.method_string()), names));
  };

  if (s.size() == 1 && s[0] == "healthz") {
    allow({http::verb::get});
    return json_response(200, {{"status", "ok"}}, req);
  }
  if (!authorized(req)) throw api_error(401, "unauthorized", "missing or wrong bearer token");

  if (s.size() == 1 && s[0] == "metrics") {
    allow({http::verb::get});
    return make_response(200, metrics_.render(jobs_), "text/plain; version=0.0.4", req);
  }
  if (s.size() < 2 || s[0] != "v1" || s[1] != "jobs" || s.size() > 4)
    throw api_error(404, "not_found", fmt::format("no route '{}'", std::string(req.target())));

  if (s.size() == 2) {
    allow({http::verb::get, http::verb::post});
    if (method == http::verb::get) {
      json list = json::array();
      for (const auto& j : jobs_.list()) list.push_back(job_view(j, false));
      return json_response(200, {{"jobs", list}}, req);
    }
    std::string why;
    const json body = parse_json_text(req.body(), why);
    if (body.is_discarded()) throw api_error(400, "invalid_json", fmt::format("the body is not valid JSON: {}", why), "body");
    const auto f = t.query.find("force");
    const bool force = f != t.query.end() && (f->second == "true" || f->second == "1");
    const JobRecord job = jobs_.submit(body, force);
    auto res = json_response(201, {{"id", job.id}, {"state", job_state_name(job.state)}, {"url", "/v1/jobs/" + job.id}}, req);
    res.set(http::field::location, "/v1/jobs/" + job.id);
    return res;
  }

  const std::string& id = s[2];
  const auto job = valid_job_id(id) ? jobs_.get(id) : std::nullopt;
  if (!job) throw api_error(404, "not_found", fmt::format("no job '{}'", id));

  if (s.size() == 3) {
    allow({http::verb::get, http::verb::delete_});
    if (method == http::verb::get) return json_response(200, job_view(*job, true), req);
    const JobRecord after = jobs_.cancel(id);
    return json_response(after.state == job_state::cancelled ? 200 : 202, job_view(after, false), req);
  }
  if (s[3] == "manifest") {
    allow({http::verb::get});
    const fs::path manifest = fs::path(job->spec.value("output", "")) / "manifest.json";
    // Until the job has succeeded, a manifest in its output is an earlier job's.
    if (job->state != job_state::succeeded)
      throw api_error(404, "not_ready", fmt::format("job {} is {}: its manifest exists once it has succeeded", id,
                                                    job_state_name(job->state)));
    std::optional<std::string> text = read_manifest_file(manifest);
    if (!text) throw api_error(404, "not_found", fmt::format("'{}' is gone or not a regular file", manifest.string()));
    return make_response(200, std::move(*text), "application/json", req);
  }
  if (s[3] == "log") {
    allow({http::verb::get});
    int64_t bytes = 65536;
    if (auto b = t.query.find("bytes"); b != t.query.end()) {
      try {
        bytes = std::clamp<int64_t>(std::stoll(b->second), 0, int64_t{16} << 20);
      } catch (const std::exception&) {
        throw api_error(400, "invalid_query", fmt::format("bytes must be an integer, got '{}'", b->second), "bytes");
      }
    }
    return make_response(200, read_tail(jobs_.paths(id).log, bytes), "text/plain; charset=utf-8", req);
  }
  if (s[3] == "resume") {
    allow({http::verb::post});
    return json_response(202, job_view(jobs_.resume(id), false), req);
  }
  throw api_error(404, "not_found", fmt::format("no route '{}'", std::string(req.target())));
}

}  // namespace shardq::service
