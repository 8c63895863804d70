#include "common/fault.hpp"

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "common/error.hpp"

namespace shardq {
namespace {

struct FaultSpec {
  bool armed = false;
  std::string point;
  int rank = -1;
  int index = -1;
  std::string action;
};

FaultSpec parse_fault() {
  FaultSpec f;
  const char* env = std::getenv("SHARDQ_FAULT");
  if (!env || !*env) return f;
  const std::string s(env);
  const auto a = s.find(':'), b = s.find(':', a + 1), c = s.find(':', b + 1);
  if (a == std::string::npos || b == std::string::npos || c == std::string::npos)
    throw spec_error("SHARDQ_FAULT", fmt::format("'{}' is not point:rank:index:kill|throw", s));
  f.point = s.substr(0, a);
  f.rank = std::stoi(s.substr(a + 1, b - a - 1));
  f.index = std::stoi(s.substr(b + 1, c - b - 1));
  f.action = s.substr(c + 1);
  if (f.action != "kill" && f.action != "throw" && f.action != "stall")
    throw spec_error("SHARDQ_FAULT", fmt::format("action must be kill, throw or stall, got '{}'", f.action));
  f.armed = true;
  return f;
}

}  // namespace

void fault_point(std::string_view point, int rank, int index) {
  static const FaultSpec fault = parse_fault();
  if (!fault.armed || fault.point != point || (fault.rank >= 0 && fault.rank != rank) ||
      (fault.index >= 0 && fault.index != index))
    return;
  if (fault.action == "kill") std::raise(SIGKILL);
  if (fault.action == "stall") {
    std::this_thread::sleep_for(std::chrono::seconds(10));
    return;
  }
  throw error(fmt::format("injected fault at {} (rank {}, index {})", point, rank, index));
}

}  // namespace shardq
