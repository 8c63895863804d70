// The job spec: one schema for `shardq quantize --config`, its flags, and REST bodies
// (../shared/DESIGN.md, "Job spec"). Parsing validates everything that can be checked
// without touching the filesystem; unknown keys and out-of-range values throw spec_error
// naming the field ("quant.bits: must be one of 2, 3, 4, 8 for gptq, got 5").
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/quant_types.hpp"

namespace shardq {

struct CalibrationSpec {
  std::string path;
  std::string format = "text";  // text | tokens
  int samples = 128;
  int seq_len = 2048;  // capped at the model's context when the job runs
  uint64_t seed = 0;
};

struct ModuleOverride {
  std::string pattern;  // glob over module names ("model.layers.0.*")
  std::optional<int> bits;      // 16 keeps the module in floating point
  std::optional<quant_method> method;
  std::optional<int> group_size;
};

struct PrecisionSpec {
  std::string policy = "uniform";  // uniform | keep | lim | zd | random | sensitivity
  std::optional<double> target_bpw;
  std::vector<int> bit_options;              // e.g. {2, 3, 4, 8}
  std::string keep_fp16_layers;              // "16-31", "0-3,40-47" as written
  std::vector<int> keep_fp16_layer_list;     // parsed, sorted, unique
  std::vector<std::string> components = {"attn", "mlp"};
  std::vector<ModuleOverride> overrides;     // applied last; the most specific pattern wins
  uint64_t seed = 0;                         // for policy random
};

struct JobSpec {
  std::string model;
  std::string output;
  CalibrationSpec calibration;
  QuantConfig quant;
  PrecisionSpec precision;
  std::string schedule = "sequential";  // pipeline | sequential
  std::string comm = "auto";            // auto | mpi | nccl
  std::string device = "auto";          // auto | cpu | cuda
  bool resume = false;
};

// Parses and validates; throws spec_error naming the field.
JobSpec job_spec_from_json(const nlohmann::json& j);
// The full spec with every default filled in (what the manifest records).
nlohmann::json job_spec_to_json(const JobSpec& spec);
// Reads a JSON file; io_error if unreadable, spec_error (field "config") if not JSON.
nlohmann::json job_spec_read_file(const std::filesystem::path& path);

// "0-3,40-47" -> {0,1,2,3,40,...}; throws spec_error(field) on bad syntax or a range past
// `n_layers` (when n_layers >= 0).
std::vector<int> parse_layer_ranges(const std::string& text, const std::string& field, int n_layers = -1);

// Checks against the filesystem before any work starts: the model directory exists and has
// config.json; the calibration file exists (when given); the output is not inside the model
// directory and is not the model directory; an existing non-empty output directory is
// refused unless `force` or spec.resume. Throws spec_error naming the field.
void job_spec_check_paths(const JobSpec& spec, bool force);

// Parses a method name ("gptq", "rtn", "nf4", "int8"); spec_error(field) otherwise.
quant_method parse_quant_method(const std::string& field, const std::string& name);
// `base` switched to method `m`: nf4 and int8 bring their fixed bits, grouping and grid.
QuantConfig quant_config_for_method(const QuantConfig& base, quant_method m);

// fnmatch-style glob ('*' and '?') used by overrides.
bool glob_match(std::string_view pattern, std::string_view text);

}  // namespace shardq
