// What a job writes into its checkpoint directory, and when it counts as written.
//
// Shard layout: shard l (shard-0000l.h5) holds decoder layer l — its norms, biases and
// linears, quantized or kept; the last shard, index num_layers, holds the tensors outside
// the decoder stack (embedding, final norm, lm_head). A layer is the unit of commit and of
// resume, and the files do not depend on the number of ranks: a job interrupted with N
// ranks resumes with any other N.
//
// Every shard is committed by the rank that computed it (commit record written, file fsynced
// and renamed, then its journal entry appended by rank 0: common/checkpoint_journal.hpp);
// rank 0 builds the manifest from the journal alone, so an uninterrupted and a resumed job
// finish the same way.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/comm.hpp"
#include "common/checkpoint_journal.hpp"
#include "common/safetensors.hpp"
#include "coordinator/job_plan.hpp"
#include "worker/layer_quantize.hpp"
#include "worker/llama_weights.hpp"

namespace shardq {

// Index of the shard holding the embedding, final norm and lm_head.
inline int model_shard_index(const ModelConfig& c) { return c.num_layers; }
// The layers of every shard, by index (the layout above).
std::vector<std::vector<int>> checkpoint_shard_layers(const ModelConfig& c);

// Writes and commits the shard of decoder layer `layer`; returns its journal entry. `rank`
// names the writer for the fault points (common/fault.hpp: shard_write, commit_recorded,
// shard_closed).
JournalShard commit_layer_shard(const JobPlan& p, const SafetensorsModel& model, int layer,
                                const LayerWeights& w, const std::vector<QuantizedModule>& modules, double lim,
                                double zd, int rank);

// commit_layer_shard in two steps, so that the second can run beside the next layer's work:
// write_layer_shard (HDF5, the calling thread) leaves the complete file as NAME.tmp;
// publish_layer_shard (no HDF5 call, any thread) hashes it, writes its commit record, and
// fsyncs and renames it to NAME.
struct WrittenShard {
  std::filesystem::path tmp, path;
  JournalShard entry;  // all but the sha256
  int rank = 0;
  std::string identity_sha256;  // of the job, for the commit record
};
WrittenShard write_layer_shard(const JobPlan& p, const SafetensorsModel& model, int layer,
                               const LayerWeights& w, const std::vector<QuantizedModule>& modules, double lim,
                               double zd, int rank);
JournalShard publish_layer_shard(WrittenShard written);
// Writes and commits the shard of the tensors outside the decoder stack (rank 0).
JournalShard commit_model_shard(const JobPlan& p, const SafetensorsModel& model);

// Collective: every rank passes the entries it committed since the last call (serialised
// with journal_shard_to_json, possibly none); rank 0 appends them to `journal` in rank order.
void journal_commits(Comm& comm, const std::vector<JournalShard>& committed, JournalWriter* journal);

// The quantized linears of a committed layer shard, read back bit for bit, in the order of
// `choices` (kept linears come back without `quantized`, as quantize_layer returns them).
std::vector<QuantizedModule> read_layer_shard(const std::filesystem::path& dir, int layer,
                                              const std::vector<ModuleChoice>& choices);

// Rank 0, once every shard is committed: the manifest from the journal's records, checked
// against the files' sha256, then model.h5 and manifest.json (last). `run` goes into the
// manifest as is (what this run did: resume counts, work). Returns the manifest.
nlohmann::json finalize_checkpoint(const JobPlan& p, const Journal& journal, const SafetensorsModel& model,
                                   std::map<std::string, double> phase_seconds, const nlohmann::json& ranks,
                                   const nlohmann::json& run);

}  // namespace shardq
