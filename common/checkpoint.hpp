// The sharded HDF5 checkpoint (../shared/DESIGN.md, "Checkpoint"): shard writers, the
// master file model.h5 with external links to every tensor, and the reader.
//
// Directory layout:
//   shard-00000.h5 ...  one writer each. At the root, one link per tensor:
//       NAME (group)   a quantized linear, NAME = HF tensor name without ".weight":
//           qweight  uint32  [rows, words_per_row]   bit stream per row (kernels/quant_types.hpp)
//           scales   float16 [rows, n_groups]        IEEE binary16 (h5py/numpy: float16)
//           zeros    uint8   [rows, n_groups]        when the method stores zero points
//           g_idx    int32   [cols]                  with act-order
//           outlier_cols int32 [n], outlier_weights float16 [rows, n]   int8 outliers
//           attributes bits, group_size, sym (0/1), method ("gptq"...), shape [rows, cols]
//       NAME (dataset) a tensor kept in floating point (float16 or float32), HF name as is.
//   model.h5            the same names as external links into the shards (relative file
//                       names), plus the manifest JSON as root attribute "manifest".
//   manifest.json       written last (manifest.hpp); its absence marks an incomplete directory.
// `h5ls -r --follow-symlinks model.h5` lists every tensor through the links.
//
// Every file is written as NAME.tmp and renamed on close after fsync (atomic_file.hpp).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "common/dtype.hpp"
#include "common/hdf5.hpp"
#include "common/manifest.hpp"
#include "common/tensor.hpp"
#include "kernels/quant_types.hpp"

namespace shardq {

inline constexpr const char* checkpoint_master_name = "model.h5";
inline constexpr const char* checkpoint_manifest_attribute = "manifest";
// "shard-00000.h5" for index 0.
std::string checkpoint_shard_name(int index);

// Writes one shard file. Destroying a writer that was not closed removes its temporary file,
// so a failed rank leaves no shard behind.
class ShardWriter {
 public:
  explicit ShardWriter(std::filesystem::path path);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Group NAME with qweight/scales/zeros/g_idx/outliers and attributes (layout above).
  // Throws io_error naming the tensor when the arrays disagree with rows/cols/bits/groups.
  void write_quantized(const std::string& name, const QuantizedLinear& q);
  // Dataset NAME holding `t` stored as `store` (dtype::f16 or dtype::f32; f16 rounds to
  // nearest even).
  void write_float(const std::string& name, const Tensor& t, dtype store = dtype::f32);
  // Flushes, closes, fsyncs and renames NAME.tmp to NAME.
  void close();
  // Flushes and closes the HDF5 file, which stays NAME.tmp until publish_file(tmp, path)
  // (atomic_file.hpp: fsync and rename, no HDF5 call, so any thread may do it).
  void close_unpublished();

  const std::filesystem::path& path() const { return path_; }
  // Names written so far, in order.
  const std::vector<std::string>& names() const { return names_; }

 private:
  void check_new_name(const std::string& name);

  std::filesystem::path path_;
  std::filesystem::path tmp_path_;
  h5::File file_;
  std::vector<std::string> names_;
  bool closed_ = false;
};

// Writes DIR/model.h5: an external link for every root link of every shard (relative file
// name), plus `manifest_json` as the root attribute "manifest". Throws io_error when two
// shards hold the same name.
void checkpoint_write_master(const std::filesystem::path& dir, const std::vector<std::string>& shard_files,
                             const std::string& manifest_json);

// Finishes a checkpoint whose shards are all closed: fills manifest.shards[*].sha256 from
// the files (or, where one is already recorded, checks it and throws io_error naming the
// file on a mismatch), writes model.h5 with the manifest copy, then manifest.json last.
void checkpoint_finalize(const std::filesystem::path& dir, Manifest& manifest);

// Reads a checkpoint through model.h5 (given the file or its directory).
class CheckpointReader {
 public:
  explicit CheckpointReader(const std::filesystem::path& path);

  const std::filesystem::path& master_path() const { return master_path_; }
  // Every tensor name (quantized linears and float tensors), sorted.
  std::vector<std::string> tensor_names() const;
  bool contains(const std::string& name) const;
  bool is_quantized(const std::string& name) const;
  // The stored form, exactly as written (bit for bit).
  QuantizedLinear read_quantized(const std::string& name) const;
  // A float tensor converted to fp32 (exact for float16 and float32).
  Tensor read_float(const std::string& name) const;
  // The stored dtype of a float tensor (dtype::f16 or dtype::f32).
  dtype float_dtype(const std::string& name) const;
  // The manifest copy held in model.h5.
  std::string manifest_json() const;

 private:
  std::filesystem::path master_path_;
  h5::File file_;
};

}  // namespace shardq
