// The global precision manifest (manifest.json) of a checkpoint: C++ structs, JSON
// conversion, atomic write and validated read. Field names are fixed by
// ../shared/DESIGN.md ("Checkpoint"); the extra fields here (module sym/zeros/act_order/
// outliers) are what avg_bits_effective needs.
//
// What the bit averages count (manifest_bits()), over every linear in `modules`:
//   avg_bits           = Σ stored_bits(m) · params(m) / Σ params(m)
//                        stored_bits = bits of the integer codes; 16 for a linear kept in
//                        floating point (bits >= 16), whatever its storage dtype.
//   avg_bits_effective = (Σ bits · params + Σ overhead(m)) / Σ params(m), with overhead of a
//                        quantized linear [rows, cols], n_groups = ceil(cols / group):
//                          scales       16 bits × rows × n_groups
//                          zero points  bits × rows × n_groups, only when `zeros` (asymmetric
//                                       gptq/rtn/int8: the scheme needs them; a symmetric
//                                       scheme's zero is a constant, nf4 has none) — counted at
//                                       the `bits` the scheme logically needs, not the uint8
//                                       container the file uses
//                          g_idx        32 bits × cols, only with act-order
//                          outliers     (16 × rows + 32) × n_outliers (int8 fp16 columns + index)
//                        Kept linears add no overhead.
//   quantized_params   = Σ params of the linears stored quantized (bits < 16).
// Parameters of embeddings and norms are not linears and are not counted.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/quant_types.hpp"

namespace shardq {

inline constexpr const char* manifest_format = "shardq-manifest";
inline constexpr int manifest_version = 1;
inline constexpr const char* manifest_file_name = "manifest.json";

struct ManifestFile {
  std::string name;    // relative to the model directory
  std::string sha256;  // lowercase hex
};

struct ManifestModel {
  std::string path;
  std::string architecture;  // "LlamaForCausalLM"
  nlohmann::json config = nlohmann::json::object();  // the model's config.json
  std::vector<ManifestFile> files;
};

struct ManifestSummary {
  double avg_bits = 0.0;
  double avg_bits_effective = 0.0;
  int64_t quantized_params = 0;
  int64_t bytes = 0;           // bytes of every tensor the checkpoint stores
  int64_t original_bytes = 0;  // bytes of the source model's tensors
  double compression = 0.0;    // original_bytes / bytes
  std::map<std::string, double> phase_seconds;
};

struct ManifestLayer {
  int index = 0;
  int shard = 0;
  double lim = 0.0;
  double zd = 0.0;
  std::map<std::string, double> sensitivity;  // bit option ("2", "4", ...) -> measured error
};

struct ManifestModule {
  std::string name;  // HF tensor name without ".weight"
  int layer = -1;    // decoder layer; -1 outside the decoder stack (lm_head)
  std::vector<int64_t> shape;  // [rows, cols]
  int bits = 16;               // >= 16: kept in floating point
  std::string method;          // gptq | rtn | nf4 | int8 | fp16 | fp32 (kept)
  int group_size = -1;         // as configured (-1: one group per row)
  bool sym = false;
  bool zeros = false;      // zero points count toward avg_bits_effective (see top)
  bool act_order = false;  // g_idx stored
  int64_t outliers = 0;    // int8 outlier columns kept in fp16
  int64_t bytes = 0;       // stored bytes
  double rel_error = 0.0;  // ‖(W−Q)X‖² / ‖WX‖² on calibration data

  int64_t params() const;
};

struct ManifestShard {
  std::string file;  // "shard-00000.h5"
  std::string sha256;
  std::vector<int> layers;
};

struct Manifest {
  std::string format = manifest_format;
  int version = manifest_version;
  ManifestModel model;
  nlohmann::json spec = nlohmann::json::object();  // the full job spec (job_spec_to_json)
  ManifestSummary summary;
  std::vector<ManifestLayer> layers;
  std::vector<ManifestModule> modules;
  std::vector<ManifestShard> shards;
  // Per rank of the run that wrote it: {rank, host, peak_rss_mb}; varies from run to run.
  nlohmann::json ranks = nlohmann::json::array();
  // What the run that finished the checkpoint did: {"resumed", "shards_reused",
  // "work_gflop", "full_job_gflop", "work_fraction"}; varies from run to run.
  nlohmann::json run = nlohmann::json::object();
};

// The stored spelling of a method (kernels/quant_types.hpp's quant_method_name) and back;
// parsing throws io_error naming `context`.
std::string quant_method_string(quant_method m);
quant_method quant_method_parse(const std::string& name, const std::string& context);

// A module entry for a quantized linear, from its stored form (bytes = the arrays stored).
ManifestModule manifest_module(const std::string& name, int layer, const QuantizedLinear& q, double rel_error);
// A module entry for a linear kept in floating point, stored with `store_bytes` per weight.
ManifestModule manifest_module_kept(const std::string& name, int layer, int64_t rows, int64_t cols, int store_bytes);

struct ManifestBits {
  double avg_bits = 0.0;
  double avg_bits_effective = 0.0;
  int64_t quantized_params = 0;
};
// The bit averages defined at the top of this file (0 for an empty list).
ManifestBits manifest_bits(const std::vector<ManifestModule>& modules);
// Overhead bits of one module (scales, zero points, g_idx, outliers) as defined at the top.
int64_t manifest_overhead_bits(const ManifestModule& m);

nlohmann::json manifest_to_json(const Manifest& m);
// Validates format, version and the fixed fields; throws io_error "<source>: <field>: ...".
Manifest manifest_from_json(const nlohmann::json& j, const std::string& source);
// Writes DIR/manifest.json atomically (tmp + fsync + rename). Call it last: a checkpoint
// directory without manifest.json is incomplete.
void manifest_write(const std::filesystem::path& dir, const Manifest& m);
// Reads a checkpoint directory's manifest.json (or the manifest file itself), validated.
Manifest manifest_read(const std::filesystem::path& path);
// The same file as parsed JSON, unvalidated (keeps fields this version does not know);
// io_error when missing or not JSON. `source` receives the file's path.
nlohmann::json manifest_read_json(const std::filesystem::path& path, std::string* source = nullptr);

}  // namespace shardq
