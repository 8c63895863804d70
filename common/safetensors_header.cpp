// Parsing and validation of safetensors headers (format: safetensors.hpp). Kept apart from
// the mmap reader so the fuzz target links only this file, dtype.cpp and header-only JSON.
#include <algorithm>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/json_text.hpp"
#include "common/safetensors.hpp"

namespace shardq {
namespace {

using json = nlohmann::json;


TensorInfo parse_entry(const std::string& name, const json& entry, uint64_t data_size,
                       const std::string& context) {
  const auto fail = [&](const std::string& what) {
    return io_error(fmt::format("{}: tensor '{}': {}", context, name, what));
  };
  if (!entry.is_object()) throw fail(fmt::format("entry is {}, expected an object", json_kind(entry)));

  TensorInfo info;
  info.name = name;
  const auto dt = entry.find("dtype");
  if (dt == entry.end()) throw fail("missing 'dtype'");
  if (!dt->is_string()) throw fail(fmt::format("'dtype' is {}, expected a string", json_kind(*dt)));
  info.type = dtype_from_name(dt->get_ref<const std::string&>(), fmt::format("{}: tensor '{}'", context, name));

  const auto sh = entry.find("shape");
  if (sh == entry.end()) throw fail("missing 'shape'");
  if (!sh->is_array()) throw fail(fmt::format("'shape' is {}, expected an array", json_kind(*sh)));
  // numel with overflow detection: a hostile shape must not wrap around to a small size.
  uint64_t numel = 1;
  bool numel_overflow = false, zero_dim = false;
  for (const json& d : *sh) {
    if (d.is_number_integer() && !d.is_number_unsigned()) {
      throw fail(fmt::format("negative dimension {} in shape", d.get<int64_t>()));
    }
    if (!d.is_number_unsigned()) throw fail(fmt::format("shape holds {}, expected integers", json_kind(d)));
    const uint64_t v = d.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      throw fail(fmt::format("dimension {} in shape is too large", v));
    }
    info.shape.push_back(static_cast<int64_t>(v));
    zero_dim = zero_dim || v == 0;
    if (v != 0 && numel > std::numeric_limits<uint64_t>::max() / v) numel_overflow = true;
    numel *= v;
  }
  if (zero_dim) {  // the product is exactly zero whatever overflowed before
    numel = 0;
    numel_overflow = false;
  }

  const auto off = entry.find("data_offsets");
  if (off == entry.end()) throw fail("missing 'data_offsets'");
  if (!off->is_array() || off->size() != 2) {
    throw fail(fmt::format("'data_offsets' is {}, expected [begin, end]",
                           off->is_array() ? fmt::format("an array of {}", off->size()) : std::string(json_kind(*off))));
  }
  for (const json& o : *off) {
    if (o.is_number_integer() && !o.is_number_unsigned()) {
      throw fail(fmt::format("negative data offset {}", o.get<int64_t>()));
    }
    if (!o.is_number_unsigned()) throw fail(fmt::format("'data_offsets' holds {}, expected integers", json_kind(o)));
  }
  info.begin = (*off)[0].get<uint64_t>();
  info.end = (*off)[1].get<uint64_t>();
  if (info.begin > info.end) {
    throw fail(fmt::format("data_offsets begin {} > end {}", info.begin, info.end));
  }
  if (info.end > data_size) {
    throw fail(fmt::format("data_offsets end {} past the end of the data buffer ({} bytes)", info.end, data_size));
  }
  const uint64_t elem = dtype_size(info.type);
  if (numel_overflow || numel > std::numeric_limits<uint64_t>::max() / elem ||
      numel * elem != info.end - info.begin) {
    throw fail(fmt::format("dtype {} and shape {} need {} bytes but data_offsets hold {}",
                           dtype_name(info.type), shape_string(info.shape),
                           numel_overflow ? std::string("more than 2^64") : std::to_string(numel * elem),
                           info.end - info.begin));
  }
  return info;
}

}  // namespace

std::map<std::string, TensorInfo> safetensors_parse_header(std::string_view header_json, uint64_t data_size,
                                                           const std::string& context,
                                                           std::map<std::string, std::string>* metadata) {
  std::string why;
  const json header = parse_json_text(header_json, why);
  if (header.is_discarded()) throw io_error(fmt::format("{}: header is not valid JSON ({})", context, why));
  if (!header.is_object()) {
    throw io_error(fmt::format("{}: header is {}, expected a JSON object", context, json_kind(header)));
  }

  std::map<std::string, TensorInfo> tensors;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        throw io_error(fmt::format("{}: __metadata__ is {}, expected an object", context, json_kind(entry)));
      }
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          throw io_error(fmt::format("{}: __metadata__ '{}' is {}, expected a string", context, key, json_kind(value)));
        }
        if (metadata != nullptr) (*metadata)[key] = value.get<std::string>();
      }
      continue;
    }
    tensors.emplace(name, parse_entry(name, entry, data_size, context));
  }

  // Overlap check: sort non-empty ranges by begin; each must start at or after the furthest
  // end seen so far. Empty tensors occupy no bytes and cannot overlap.
  std::vector<const TensorInfo*> by_begin;
  for (const auto& [name, info] : tensors) {
    if (info.end > info.begin) by_begin.push_back(&info);
  }
  std::sort(by_begin.begin(), by_begin.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
  });
  for (std::size_t i = 1; i < by_begin.size(); ++i) {
    const TensorInfo& prev = *by_begin[i - 1];
    const TensorInfo& cur = *by_begin[i];
    if (cur.begin < prev.end) {
      throw io_error(fmt::format("{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", context, prev.name,
                                 prev.begin, prev.end, cur.name, cur.begin, cur.end));
    }
  }
  return tensors;
}

SafetensorsLayout safetensors_parse(std::span<const std::byte> file_bytes, const std::string& context) {
  if (file_bytes.size() < 8) {
    throw io_error(fmt::format("{}: file is {} bytes, shorter than the 8-byte header length", context,
                               file_bytes.size()));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | static_cast<uint8_t>(file_bytes[i]);
  const uint64_t available = file_bytes.size() - 8;
  if (header_len > available) {
    throw io_error(fmt::format("{}: header length {} runs past the end of the file ({} bytes after the length)",
                               context, header_len, available));
  }
  SafetensorsLayout layout;
  layout.data_start = 8 + header_len;
  const std::string_view header(reinterpret_cast<const char*>(file_bytes.data()) + 8, header_len);
  layout.tensors = safetensors_parse_header(header, available - header_len, context, &layout.metadata);
  return layout;
}

}  // namespace shardq
