// What a rank writes: its shard of the checkpoint (layers it owns, plus the embedding, final
// norm and lm_head on rank 0) and the manifest records of those layers; and, on rank 0, the
// finished checkpoint — the manifest from every rank's records, model.h5, manifest.json last.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/checkpoint.hpp"
#include "common/manifest.hpp"
#include "common/safetensors.hpp"
#include "coordinator/job_plan.hpp"
#include "worker/layer_quantize.hpp"
#include "worker/llama_weights.hpp"

namespace shardq {

// One rank's shard and the records that go into the manifest.
class ShardOutput {
 public:
  ShardOutput(const std::filesystem::path& dir, int index);

  // The layer's norms, biases and linears (quantized groups or kept floats) and its records.
  void write_layer(const SafetensorsModel& model, int layer, const LayerWeights& w,
                   const std::vector<QuantizedModule>& modules, double lim, double zd);
  // A floating-point tensor stored in the source model's precision (see store_dtype_of).
  void write_float(const SafetensorsModel& model, const std::string& name, const Tensor& t);
  void write_source_tensor(const SafetensorsModel& model, const std::string& name);
  // Closes the shard and serialises this rank's records for the gather on rank 0.
  std::string finish();

 private:
  int index_;
  ShardWriter writer_;
  int64_t bytes_ = 0;
  std::vector<ManifestLayer> layers_;
  std::vector<ManifestModule> records_;
};

// Rank 0: the manifest from everyone's records (finish() strings, in rank order) and the
// ranks' info, then model.h5 and manifest.json (last). Returns the manifest.
nlohmann::json finalize_checkpoint(const JobPlan& p, const std::vector<std::string>& parts, const SafetensorsModel& model,
                                   std::map<std::string, double> phase_seconds, const nlohmann::json& ranks);

}  // namespace shardq
