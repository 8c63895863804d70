#include "common/log.hpp"

#include <cstdlib>

#include <spdlog/sinks/stdout_sinks.h>

namespace shardq {

void log_init(std::string_view level, std::string_view prefix) {
  auto logger = spdlog::stderr_logger_mt("shardq");
  std::string pattern = "[%H:%M:%S.%e] [%^%l%$] ";
  if (!prefix.empty()) pattern += std::string(prefix) + ": ";
  logger->set_pattern(pattern + "%v");
  std::string lvl(level);
  if (lvl.empty()) {
    if (const char* env = std::getenv("SHARDQ_LOG")) lvl = env;
  }
  logger->set_level(lvl.empty() ? spdlog::level::info : spdlog::level::from_str(lvl));
  spdlog::set_default_logger(logger);
}

std::string one_line(std::string_view message) {
  std::string out;
  out.reserve(message.size());
  for (char c : message) out += (c == '\n' || c == '\r') ? ' ' : c;
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

}  // namespace shardq
