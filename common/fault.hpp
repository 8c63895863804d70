// Fault injection for the failure and resume tests: named points in the job where a test can
// make one rank die (SIGKILL) or fail (throw) on purpose, chosen by the environment:
//   SHARDQ_FAULT="<point>:<rank>:<index>:<kill|throw>"   e.g. "layer_done:1:2:kill"
// <index> is the layer (or micro-batch) number at that point, -1 for any. Without the variable
// a fault point costs one getenv at first use.
#pragma once

#include <string_view>

namespace shardq {

void fault_point(std::string_view point, int rank, int index);

}  // namespace shardq
