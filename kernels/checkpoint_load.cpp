// load_linear_fp32; see checkpoint_load.hpp.
#include "kernels/checkpoint_load.hpp"

#include "common/error.hpp"
#include "kernels/quantize.hpp"

namespace shardq {

Tensor load_linear_fp32(const CheckpointReader& reader, const std::string& name) {
  constexpr std::string_view suffix = ".weight";
  const bool has_suffix = name.size() > suffix.size() && name.ends_with(suffix);
  const std::string base = has_suffix ? name.substr(0, name.size() - suffix.size()) : name;
  if (reader.contains(base) && reader.is_quantized(base)) return dequantize(reader.read_quantized(base));
  const std::string weight = base + std::string(suffix);
  if (reader.contains(weight) && !reader.is_quantized(weight)) return reader.read_float(weight);
  throw io_error(fmt::format("'{}': no linear '{}' (neither a quantized group '{}' nor a tensor '{}')",
                             reader.master_path().string(), name, base, weight));
}

}  // namespace shardq
