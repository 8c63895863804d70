// Reading and writing safetensors files (https://huggingface.co/docs/safetensors):
//   8-byte little-endian header length N, N bytes of JSON header
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
//   then the data buffer; offsets are relative to the end of the header.
//
// Files are memory-mapped and validated when opened (offsets in range, non-overlapping,
// size == numel * dtype size); a tensor's bytes are only touched when asked for, so a rank
// reads just its own layers. A model directory holds model.safetensors or a sharded set
// listed in model.safetensors.index.json ({"weight_map": {tensor: file}}); opening a model
// parses every header (a few KB each) so a bad index or file fails at once, not mid-job.
//
// Header parsing (safetensors_header.cpp) needs neither mmap nor HDF5: the fuzz target
// tests/fuzz/fuzz_safetensors_header.cpp builds it alone with clang -fsanitize=fuzzer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/dtype.hpp"
#include "common/tensor.hpp"

namespace shardq {

struct TensorInfo {
  std::string name;
  dtype type = dtype::f32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data buffer (after the header)
  uint64_t end = 0;
  std::string file;    // file name (no directory) it lives in
  int64_t numel() const { return Tensor::numel_of(shape); }
};

class MappedFile;  // RAII mmap, defined in mapped_file.hpp

// One safetensors file.
class SafetensorsFile {
 public:
  // Maps and validates `path`; throws io_error naming the file and the problem.
  explicit SafetensorsFile(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;

  const std::filesystem::path& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo& info(const std::string& name) const;  // throws io_error if missing
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  std::span<const std::byte> bytes(const std::string& name) const;
  Tensor load_fp32(const std::string& name) const;  // F32, F16 or BF16 converted to fp32

 private:
  std::filesystem::path path_;
  std::unique_ptr<MappedFile> map_;
  uint64_t data_start_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Parses and validates a header (JSON text) against a data buffer of `data_size` bytes:
// every entry an object with a known dtype, non-negative shape and data_offsets
// [begin, end] with begin <= end <= data_size, end - begin == numel * dtype size, and no two
// tensors overlapping. "__metadata__" must map strings to strings. `context` names the
// file in error messages ("safetensors file 'x': tensor 'y': ..."); throws io_error.
std::map<std::string, TensorInfo> safetensors_parse_header(std::string_view header_json,
                                                           uint64_t data_size,
                                                           const std::string& context,
                                                           std::map<std::string, std::string>* metadata = nullptr);

// A whole file's layout: the 8-byte length prefix checked against the file size, then the
// header parsed as above. TensorInfo::file is left empty.
struct SafetensorsLayout {
  std::map<std::string, TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + header length
};
SafetensorsLayout safetensors_parse(std::span<const std::byte> file_bytes, const std::string& context);

// All safetensors files of a model directory (single or index-sharded). The constructor maps
// every file and validates every header and the index against them; tensor data is read
// only by load_fp32 / bytes. `dir` may also be a single .safetensors file.
class SafetensorsModel {
 public:
  explicit SafetensorsModel(const std::filesystem::path& dir);
  ~SafetensorsModel();
  SafetensorsModel(SafetensorsModel&&) noexcept;
  SafetensorsModel& operator=(SafetensorsModel&&) noexcept;

  const std::filesystem::path& dir() const { return dir_; }
  std::vector<std::string> tensor_names() const;  // sorted
  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // throws io_error naming the tensor
  Tensor load_fp32(const std::string& name) const;
  std::span<const std::byte> bytes(const std::string& name) const;
  std::vector<std::string> files() const;  // file names, sorted

 private:
  std::filesystem::path dir_;
  std::map<std::string, std::string> weight_map_;  // tensor -> file
  std::map<std::string, std::unique_ptr<SafetensorsFile>> open_;  // file name -> mapped file
  const SafetensorsFile& file(const std::string& file_name) const;
};

// Streaming writer: the header is fixed first, then each tensor's bytes are produced by a
// callback in chunks, so multi-GB files are written with little memory.
struct TensorToWrite {
  std::string name;
  dtype type = dtype::f32;
  std::vector<int64_t> shape;
  // Fills `out` (exactly numel * dtype_size bytes, in pieces): called in order of
  // increasing offset with the byte offset within this tensor and the span to fill; both
  // are multiples of dtype_size, so a piece holds whole elements. May be left
  // unset for a tensor without elements.
  std::function<void(uint64_t offset, std::span<std::byte> out)> fill;
};
// Tensors are laid out in the given order; the header is padded with spaces to a multiple
// of 8 bytes (as the reference writer does) so the data buffer starts aligned. Writes
// `path`.tmp with pwrite in chunks of a few MB and renames it, so a crash never leaves a
// half-written file under the final name. Throws io_error naming the file on bad input.
void safetensors_write(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// Convenience: writes fp32 tensors converted to `type`.
void safetensors_write_tensors(const std::filesystem::path& path,
                               const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                               dtype type = dtype::f32);

}  // namespace shardq
