// The HTTP side of `shardq serve`, after Boost.Beast's example/http/server/async: a listener
// that gives each connection its own strand, sessions running read → handle → write with
// keep-alive, a body size limit (413), a header limit (431), 400 for what is not HTTP/1.1, a
// connection cap (503) and read timeouts (slow clients are dropped), and a
// clean stop on SIGINT/SIGTERM through net::signal_set. Requests are answered by
// Api::handle_request, those that read files (Api::reads_files) on a pool of their own so
// that a stalled filesystem does not stall the I/O threads; every answer is logged as one
// JSON line and counted in Metrics.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "coordinator/service/api.hpp"

namespace shardq::service {

struct ServerConfig {
  std::string address = "127.0.0.1";
  unsigned short port = 8080;  // 0: any free port (reported to on_listening)
  uint64_t max_body_bytes = 1 << 20;
  std::chrono::seconds read_timeout{30};  // for a whole request, and idle keep-alive
  int threads = 2;
  // Connections open at once; one more is answered 503 and closed. Idle keep-alive clients
  // hold a descriptor each until the read timeout, so the cap, kept under the descriptor limit,
  // leaves room for the job store, logs and launchers.
  int max_connections = 256;
};

// Serves until SIGINT or SIGTERM. `on_listening` gets the bound port. Throws io_error when
// the address cannot be bound.
void http_serve(const ServerConfig& config, const Api& api, Metrics& metrics,
                const std::function<void(unsigned short)>& on_listening);

}  // namespace shardq::service
