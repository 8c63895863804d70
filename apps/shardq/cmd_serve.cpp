// `shardq serve`: the coordinator service. Accepts quantization jobs over REST
// (coordinator/service/api.hpp), keeps them in --state-dir, and launches them locally under
// mpirun or through SLURM (coordinator/service/launcher.hpp). Binds 127.0.0.1 unless told
// otherwise; every request but /healthz needs a bearer token from --token-file.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include <fmt/format.h>

#include "apps/shardq/command.hpp"
#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "common/log.hpp"
#include "coordinator/service/api.hpp"
#include "coordinator/service/job_manager.hpp"
#include "coordinator/service/server.hpp"

namespace shardq::app {
namespace {

namespace fs = std::filesystem;

struct ServeFlags {
  std::string listen = "127.0.0.1:8080";
  std::string state_dir, token_file, launcher = "local", port_file, log_level;
  std::vector<std::string> data_roots, slurm_vars;
  int max_running = 1, ranks = 1, threads = 2, read_timeout_s = 30, max_connections = 256;
  uint64_t max_body_bytes = 1 << 20;
  std::string slurm_template = "slurm/single_node.sbatch";
};

std::pair<std::string, unsigned short> parse_listen(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) throw spec_error("listen", fmt::format("expected HOST:PORT, got '{}'", listen));
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = -1;
  try {
    port = std::stoi(listen.substr(colon + 1));
  } catch (const std::exception&) {
  }
  if (port < 0 || port > 65535) throw spec_error("listen", fmt::format("bad port in '{}'", listen));
  return {host, static_cast<unsigned short>(port)};
}

fs::path self_executable() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw io_error(fmt::format("cannot find the shardq executable: {}", ec.message()));
  return p;
}

void run(const ServeFlags& f) {
  log_init(f.log_level);
  service::ServiceConfig sc;
  sc.state_dir = fs::absolute(f.state_dir);
  for (const auto& r : f.data_roots) sc.data_roots.push_back(fs::absolute(r));
  if (f.max_running < 1) throw spec_error("max-running", "must be at least 1");
  if (f.ranks < 1) throw spec_error("ranks", "must be at least 1");
  sc.max_running = f.max_running;
  sc.launcher.kind = f.launcher;
  sc.launcher.ranks = f.ranks;
  sc.launcher.shardq_bin = self_executable();
  sc.launcher.slurm_template = fs::absolute(f.slurm_template);
  for (const auto& kv : f.slurm_vars) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) throw spec_error("slurm-var", fmt::format("expected NAME=VALUE, got '{}'", kv));
    sc.launcher.slurm_vars[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  const auto tokens = service::tokens_read_file(f.token_file);
  const auto [host, port] = parse_listen(f.listen);

  service::JobManager jobs(sc);
  service::Metrics metrics;
  const service::Api api(jobs, tokens, metrics);
  service::ServerConfig server;
  server.address = host;
  server.port = port;
  server.max_body_bytes = f.max_body_bytes;
  server.read_timeout = std::chrono::seconds(f.read_timeout_s);
  server.threads = f.threads;
  server.max_connections = f.max_connections;
  jobs.start();
  service::http_serve(server, api, metrics, [&](unsigned short bound) {
    spdlog::info("{}", nlohmann::json{{"event", "listening"}, {"address", host}, {"port", bound},
                                      {"launcher", f.launcher}, {"state_dir", sc.state_dir.string()}}
                           .dump());
    if (!f.port_file.empty()) write_file_atomic(f.port_file, std::to_string(bound) + "\n");
  });
  jobs.stop();
}

void setup_serve(CLI::App& root) {
  auto f = std::make_shared<ServeFlags>();
  CLI::App* c = root.add_subcommand("serve", "Coordinator service: accept quantization jobs over REST and launch them");
  c->add_option("--listen", f->listen, "HOST:PORT to bind (port 0 picks a free one)")->capture_default_str();
  c->add_option("--state-dir", f->state_dir, "Directory of the job store (jobs survive restarts)")->required();
  c->add_option("--data-root", f->data_roots, "Directory that spec paths must resolve inside (repeatable)")->required();
  c->add_option("--token-file", f->token_file, "Bearer tokens, one per line")->required();
  c->add_option("--launcher", f->launcher, "local | slurm")->capture_default_str();
  c->add_option("--max-running", f->max_running, "Jobs launched at the same time; the rest wait in the queue")->capture_default_str();
  c->add_option("--ranks", f->ranks, "MPI ranks per job")->capture_default_str();
  c->add_option("--slurm-template", f->slurm_template, "sbatch template for --launcher slurm")->capture_default_str();
  c->add_option("--slurm-var", f->slurm_vars, "NAME=VALUE for the template (NODES, GPUS_PER_NODE, CPUS_PER_TASK, TIME_LIMIT)");
  c->add_option("--max-body-bytes", f->max_body_bytes, "Largest request body (413 beyond)")->capture_default_str();
  c->add_option("--read-timeout", f->read_timeout_s, "Seconds a client may take to send a request")->capture_default_str();
  c->add_option("--threads", f->threads, "HTTP threads")->capture_default_str();
  c->add_option("--max-connections", f->max_connections, "Connections open at once (503 beyond)")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  c->add_option("--port-file", f->port_file, "Write the bound port to this file once listening");
  c->add_option("--log-level", f->log_level, "trace | debug | info | warn | error");
  c->callback([f] { run(*f); });
}

SHARDQ_REGISTER_COMMAND(setup_serve);

}  // namespace
}  // namespace shardq::app
