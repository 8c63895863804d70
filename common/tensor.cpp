#include "common/tensor.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace shardq {

std::string shape_string(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

}  // namespace shardq
