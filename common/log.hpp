// Logging through spdlog, to stderr. Verbosity from --log-level or SHARDQ_LOG.
#pragma once

#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

namespace shardq {

// Sets up the default logger ("[time] [level] message" on stderr). `prefix` (e.g. "host:3")
// is put before every message where several ranks share one stderr.
void log_init(std::string_view level = "", std::string_view prefix = "");

// Folds newlines so an error is reported as exactly one line.
std::string one_line(std::string_view message);

}  // namespace shardq
