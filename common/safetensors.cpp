// safetensors reader (memory-mapped, single file or index-sharded) and streaming writer.
// Format and contracts: safetensors.hpp; header validation: safetensors_header.cpp.
#include "common/safetensors.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "common/json_text.hpp"
#include "common/mapped_file.hpp"
#include "common/unique_fd.hpp"

namespace shardq {
namespace {

constexpr const char* index_file_name = "model.safetensors.index.json";
constexpr const char* single_file_name = "model.safetensors";
// Large enough that the syscall cost vanishes, small enough that peak RSS stays tiny;
// a multiple of every dtype size so each piece holds whole elements.
constexpr std::size_t write_chunk_bytes = std::size_t{4} << 20;

std::string file_context(const std::filesystem::path& path) {
  return fmt::format("safetensors file '{}'", path.string());
}

// A shard name from an index must stay inside the model directory.
bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

void pwrite_all(int fd, const std::byte* data, std::size_t n, uint64_t offset, const std::filesystem::path& path) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, data, n, static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      throw io_error(fmt::format("cannot write '{}' at offset {}: {}", path.string(), offset,
                                 w < 0 ? std::strerror(errno) : "no progress"));
    }
    data += w;
    n -= static_cast<std::size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path)
    : path_(path), map_(std::make_unique<MappedFile>(path)) {
  SafetensorsLayout layout = safetensors_parse(map_->bytes(), file_context(path));
  data_start_ = layout.data_start;
  tensors_ = std::move(layout.tensors);
  metadata_ = std::move(layout.metadata);
  const std::string file_name = path.filename().string();
  for (auto& [name, info] : tensors_) info.file = file_name;
}

SafetensorsFile::~SafetensorsFile() = default;
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    throw io_error(fmt::format("tensor '{}' not found in {}", name, file_context(path_)));
  }
  return it->second;
}

std::span<const std::byte> SafetensorsFile::bytes(const std::string& name) const {
  const TensorInfo& t = info(name);
  return map_->bytes().subspan(static_cast<std::size_t>(data_start_ + t.begin),
                               static_cast<std::size_t>(t.end - t.begin));
}

Tensor SafetensorsFile::load_fp32(const std::string& name) const {
  const TensorInfo& t = info(name);
  if (t.type != dtype::f32 && t.type != dtype::f16 && t.type != dtype::bf16) {
    throw unsupported_error(fmt::format("failed to read tensor '{}' from {}: dtype {} is not a floating-point "
                                        "weight type (F32, F16, BF16)",
                                        name, file_context(path_), dtype_name(t.type)));
  }
  Tensor out(t.shape);
  convert_to_fp32(t.type, bytes(name).data(), out.ptr(), static_cast<std::size_t>(out.numel()));
  return out;
}

// ---------------------------------------------------------------------------------------
// SafetensorsModel

SafetensorsModel::SafetensorsModel(const std::filesystem::path& dir) : dir_(dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(dir, ec) && dir.extension() == ".safetensors") {
    dir_ = dir.parent_path();
    const std::string name = dir.filename().string();
    auto file = std::make_unique<SafetensorsFile>(dir);
    for (const auto& [tensor, info] : file->tensors()) weight_map_[tensor] = name;
    open_[name] = std::move(file);
    return;
  }
  if (!fs::is_directory(dir, ec)) throw io_error(fmt::format("model directory '{}' does not exist", dir.string()));

  const fs::path index_path = dir / index_file_name;
  if (fs::exists(index_path, ec)) {
    const std::string where = fmt::format("safetensors index '{}'", index_path.string());
    const nlohmann::json index = json_file_read(index_path, where);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      throw io_error(fmt::format("{}: expected an object with a \"weight_map\" object", where));
    }
    for (const auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string() || !is_plain_file_name(file.get<std::string>())) {
        throw io_error(fmt::format("{}: weight_map entry '{}' must be a file name in the model directory, got {}",
                                   where, tensor, json_shown(file)));
      }
      weight_map_[tensor] = file.get<std::string>();
    }
    for (const auto& [tensor, file] : weight_map_) {
      if (open_.count(file) == 0) {
        const fs::path shard = dir / file;
        if (!fs::exists(shard, ec)) {
          throw io_error(fmt::format("{}: shard '{}' (holding '{}') does not exist", where, file, tensor));
        }
        open_[file] = std::make_unique<SafetensorsFile>(shard);
      }
      if (!open_[file]->contains(tensor)) {
        throw io_error(fmt::format("{}: tensor '{}' is listed in shard '{}' but {} does not hold it", where, tensor,
                                   file, file_context(dir / file)));
      }
    }
    return;
  }
  const fs::path single = dir / single_file_name;
  if (!fs::exists(single, ec)) {
    throw io_error(fmt::format("model directory '{}' holds neither {} nor {}", dir.string(), single_file_name,
                               index_file_name));
  }
  auto file = std::make_unique<SafetensorsFile>(single);
  for (const auto& [tensor, info] : file->tensors()) weight_map_[tensor] = single_file_name;
  open_[single_file_name] = std::move(file);
}

SafetensorsModel::~SafetensorsModel() = default;
SafetensorsModel::SafetensorsModel(SafetensorsModel&&) noexcept = default;
SafetensorsModel& SafetensorsModel::operator=(SafetensorsModel&&) noexcept = default;

std::vector<std::string> SafetensorsModel::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(weight_map_.size());
  for (const auto& [name, file] : weight_map_) names.push_back(name);
  return names;
}

bool SafetensorsModel::contains(const std::string& name) const { return weight_map_.count(name) != 0; }

const SafetensorsFile& SafetensorsModel::file(const std::string& file_name) const {
  const auto it = open_.find(file_name);
  if (it == open_.end()) {  // every file of the weight map is opened in the constructor
    throw io_error(fmt::format("safetensors file '{}' of model '{}' is not open", file_name, dir_.string()));
  }
  return *it->second;
}

const TensorInfo& SafetensorsModel::info(const std::string& name) const {
  const auto it = weight_map_.find(name);
  if (it == weight_map_.end()) {
    throw io_error(fmt::format("tensor '{}' not found in model '{}'", name, dir_.string()));
  }
  return file(it->second).info(name);
}

Tensor SafetensorsModel::load_fp32(const std::string& name) const {
  return file(info(name).file).load_fp32(name);
}

std::span<const std::byte> SafetensorsModel::bytes(const std::string& name) const {
  return file(info(name).file).bytes(name);
}

std::vector<std::string> SafetensorsModel::files() const {
  std::vector<std::string> names;
  for (const auto& [name, f] : open_) names.push_back(name);
  return names;
}

// ---------------------------------------------------------------------------------------
// Writer

void safetensors_write(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const auto fail = [&](const std::string& what) {
    return io_error(fmt::format("cannot write safetensors file '{}': {}", path.string(), what));
  };
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  std::set<std::string> seen;
  for (const TensorToWrite& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__" || !seen.insert(t.name).second) {
      throw fail(fmt::format("tensor name '{}' is empty, reserved or repeated", t.name));
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) throw fail(fmt::format("tensor '{}' has negative dimension {}", t.name, d));
      if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / 8 / static_cast<uint64_t>(d)) {
        throw fail(fmt::format("tensor '{}' shape {} is too large", t.name, shape_string(t.shape)));
      }
      numel *= static_cast<uint64_t>(d);
    }
    const uint64_t size = numel * dtype_size(t.type);
    if (size > 0 && !t.fill) throw fail(fmt::format("tensor '{}' has no fill function", t.name));
    header[t.name] = {{"dtype", dtype_name(t.type)}, {"shape", t.shape}, {"data_offsets", {offset, offset + size}}};
    sizes.push_back(size);
    offset += size;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  const std::filesystem::path tmp = temp_path_fresh(path);
  UniqueFd out{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  if (!out) throw fail(fmt::format("cannot create '{}': {}", tmp.string(), std::strerror(errno)));
  try {
    std::byte prefix[8];
    for (int i = 0; i < 8; ++i) prefix[i] = static_cast<std::byte>(static_cast<uint64_t>(text.size()) >> (8 * i));
    pwrite_all(out.get(), prefix, 8, 0, tmp);
    pwrite_all(out.get(), reinterpret_cast<const std::byte*>(text.data()), text.size(), 8, tmp);
    uint64_t pos = 8 + text.size();
    std::vector<std::byte> buffer(static_cast<std::size_t>(std::min<uint64_t>(write_chunk_bytes, offset)));
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      for (uint64_t done = 0; done < sizes[i];) {
        const auto n = static_cast<std::size_t>(std::min<uint64_t>(buffer.size(), sizes[i] - done));
        tensors[i].fill(done, std::span<std::byte>(buffer.data(), n));
        pwrite_all(out.get(), buffer.data(), n, pos, tmp);
        done += n;
        pos += n;
      }
    }
    const int fd = out.release();
    if (::close(fd) != 0) throw fail(fmt::format("closing '{}': {}", tmp.string(), std::strerror(errno)));
    publish_file(tmp, path);  // fsync before and after the rename: a crash leaves old or new, never a hole
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

void safetensors_write_tensors(const std::filesystem::path& path,
                               const std::vector<std::pair<std::string, const Tensor*>>& tensors, dtype type) {
  if (type != dtype::f32 && type != dtype::f16 && type != dtype::bf16) {
    throw io_error(fmt::format("cannot write safetensors file '{}': fp32 tensors convert to F32, F16 or BF16, not {}",
                               path.string(), dtype_name(type)));
  }
  std::vector<TensorToWrite> out;
  out.reserve(tensors.size());
  const std::size_t elem = dtype_size(type);
  for (const auto& [name, tensor] : tensors) {
    if (tensor->numel() != Tensor::numel_of(tensor->shape)) {
      throw io_error(fmt::format("cannot write safetensors file '{}': tensor '{}' holds {} values for shape {}",
                                 path.string(), name, tensor->numel(), shape_string(tensor->shape)));
    }
    out.push_back({name, type, tensor->shape, [tensor, type, elem](uint64_t offset, std::span<std::byte> bytes) {
                     convert_from_fp32(type, tensor->ptr() + offset / elem, bytes.data(), bytes.size() / elem);
                   }});
  }
  safetensors_write(path, out);
}

}  // namespace shardq
