#include "coordinator/shard_output.hpp"

#include <fmt/format.h>

#include "common/atomic_file.hpp"
#include "common/checkpoint.hpp"
#include "common/fault.hpp"
#include "common/sha256.hpp"

namespace shardq {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Floating-point tensors keep the source precision: f16 stays f16, f32 and bf16 become f32
// (bf16 → f16 could overflow).
dtype store_dtype_of(const TensorInfo& info) { return info.type == dtype::f16 ? dtype::f16 : dtype::f32; }

void copy_tokenizer(const fs::path& model_dir, const fs::path& out_dir) {
  for (const char* name : {"tokenizer.model", "tokenizer.bin", "tokenizer.json", "tokenizer_config.json"}) {
    std::error_code ec;
    if (fs::is_regular_file(model_dir / name, ec)) fs::copy_file(model_dir / name, out_dir / name, fs::copy_options::overwrite_existing);
  }
}

// One shard being written: the HDF5 file and the manifest records of what it holds.
class ShardBuilder {
 public:
  ShardBuilder(const fs::path& dir, int index) : dir_(dir), index_(index), writer_(dir / checkpoint_shard_name(index)) {}

  void write_float(const SafetensorsModel& model, const std::string& name, const Tensor& t) {
    const dtype store = store_dtype_of(model.info(name));
    writer_.write_float(name, t, store);
    bytes_ += t.numel() * static_cast<int64_t>(dtype_size(store));
  }

  void write_module(const SafetensorsModel& model, int layer, const QuantizedModule& m) {
    if (m.quantized) {
      writer_.write_quantized(m.name, *m.quantized);
      bytes_ += m.quantized->stored_bytes();
      records_.modules.push_back(manifest_module(m.name, layer, *m.quantized, m.rel_error));
    } else {
      const std::string tensor = m.name + ".weight";
      const Tensor t = model.load_fp32(tensor);
      write_float(model, tensor, t);
      const auto store_bytes = static_cast<int>(dtype_size(store_dtype_of(model.info(tensor))));
      records_.modules.push_back(manifest_module_kept(m.name, layer, t.rows(), t.cols(), store_bytes));
    }
  }

  void add_layer_record(const ManifestLayer& l) {
    records_.layers.push_back(l);
    layers_.push_back(l.index);
  }

  // Flush and close: the file is complete as NAME.tmp; publish_shard makes it NAME.
  WrittenShard finish() {
    writer_.close_unpublished();
    WrittenShard w;
    w.tmp = temp_path_for(writer_.path());
    w.path = writer_.path();
    JournalShard& s = w.entry;
    s.index = index_;
    s.file = checkpoint_shard_name(index_);
    s.bytes = bytes_;
    s.layers = layers_;
    // The records travel as a partial manifest (only layers and modules filled), so the
    // manifest's own (de)serialisation and validation serve the journal too.
    s.records = manifest_to_json(records_);
    return w;
  }

 private:
  fs::path dir_;
  int index_;
  ShardWriter writer_;
  int64_t bytes_ = 0;
  std::vector<int> layers_;
  Manifest records_;
};

}  // namespace

std::vector<std::vector<int>> checkpoint_shard_layers(const ModelConfig& c) {
  std::vector<std::vector<int>> out;
  for (int l = 0; l < c.num_layers; ++l) out.push_back({l});
  out.emplace_back();  // embedding, final norm, lm_head
  return out;
}

namespace {

// Digest, commit record, then fsync and rename: the file is complete on disk, and described
// beside it in case the journal line that makes it count is never written
// (common/checkpoint_journal.hpp).
JournalShard publish_shard(WrittenShard w) {
  w.entry.sha256 = sha256_file(w.tmp);
  commit_record_write(w.path.parent_path(), w.entry, w.identity_sha256);
  fault_point("commit_recorded", w.rank, w.entry.index);
  publish_file(w.tmp, w.path);
  return std::move(w.entry);
}

}  // namespace

WrittenShard write_layer_shard(const JobPlan& p, const SafetensorsModel& model, int layer, const LayerWeights& w,
                               const std::vector<QuantizedModule>& modules, double lim, double zd, int rank) {
  ShardBuilder shard(p.spec.output, layer);
  const std::string prefix = layer_prefix(layer);
  shard.write_float(model, prefix + "input_layernorm.weight", w.attn_norm);
  shard.write_float(model, prefix + "post_attention_layernorm.weight", w.ffn_norm);
  fault_point("shard_write", rank, layer);
  if (!w.q_bias.empty()) {
    shard.write_float(model, prefix + "self_attn.q_proj.bias", w.q_bias);
    shard.write_float(model, prefix + "self_attn.k_proj.bias", w.k_bias);
    shard.write_float(model, prefix + "self_attn.v_proj.bias", w.v_bias);
  }
  for (const QuantizedModule& m : modules) shard.write_module(model, layer, m);
  ManifestLayer rec;
  rec.index = layer;
  rec.shard = layer;
  rec.lim = lim;
  rec.zd = zd;
  shard.add_layer_record(rec);
  WrittenShard written = shard.finish();
  written.rank = rank;
  written.identity_sha256 = p.identity_sha256;
  return written;
}

JournalShard publish_layer_shard(WrittenShard written) {
  const int layer = written.entry.index, rank = written.rank;
  JournalShard committed = publish_shard(std::move(written));
  fault_point("shard_closed", rank, layer);
  return committed;
}

JournalShard commit_layer_shard(const JobPlan& p, const SafetensorsModel& model, int layer, const LayerWeights& w,
                                const std::vector<QuantizedModule>& modules, double lim, double zd, int rank) {
  return publish_layer_shard(write_layer_shard(p, model, layer, w, modules, lim, zd, rank));
}

JournalShard commit_model_shard(const JobPlan& p, const SafetensorsModel& model) {
  ShardBuilder shard(p.spec.output, model_shard_index(p.config));
  for (const char* name : {"model.embed_tokens.weight", "model.norm.weight"}) shard.write_float(model, name, model.load_fp32(name));
  if (!p.config.tie_word_embeddings) shard.write_float(model, "lm_head.weight", model.load_fp32("lm_head.weight"));
  WrittenShard written = shard.finish();
  written.identity_sha256 = p.identity_sha256;
  return publish_shard(std::move(written));
}

void journal_commits(Comm& comm, const std::vector<JournalShard>& committed, JournalWriter* journal) {
  json mine = json::array();
  for (const JournalShard& s : committed) mine.push_back(journal_shard_to_json(s));
  const std::vector<std::string> all = comm.gather(mine.dump(), 0);
  if (!comm.is_root()) return;
  for (size_t r = 0; r < all.size(); ++r) {
    for (const json& e : json::parse(all[r])) journal->append_shard(journal_shard_from_json(e, fmt::format("rank {} commit", r)));
  }
}

std::vector<QuantizedModule> read_layer_shard(const fs::path& dir, int layer, const std::vector<ModuleChoice>& choices) {
  const CheckpointReader shard(dir / checkpoint_shard_name(layer));
  std::vector<QuantizedModule> out;
  for (const ModuleChoice& c : choices) {
    QuantizedModule m;
    m.name = c.module.name;
    m.layer = layer;
    if (c.quantized) m.quantized = shard.read_quantized(c.module.name);
    out.push_back(std::move(m));
  }
  return out;
}

json finalize_checkpoint(const JobPlan& p, const Journal& journal, const SafetensorsModel& model,
                         std::map<std::string, double> phase_seconds, const json& ranks, const json& run) {
  Manifest m;
  const fs::path model_dir = fs::absolute(p.spec.model);
  m.model.path = model_dir.string();
  m.model.architecture = p.config.architecture;
  m.model.config = p.config.raw;
  for (const json& f : p.identity.at("model_files")) m.model.files.push_back({f.at("name"), f.at("sha256")});
  m.spec = job_spec_to_json(p.spec);

  std::map<int, ManifestLayer> layers;
  std::map<std::string, ManifestModule> modules;
  int64_t bytes = 0;
  const int n_shards = static_cast<int>(checkpoint_shard_layers(p.config).size());
  for (int index = 0; index < n_shards; ++index) {
    const auto it = journal.shards.find(index);
    if (it == journal.shards.end()) throw error(fmt::format("shard {} was never committed", index));
    const JournalShard& s = it->second;
    bytes += s.bytes;
    const Manifest piece = manifest_from_json(s.records, fmt::format("journal records of {}", s.file));
    for (const auto& l : piece.layers) layers[l.index] = l;
    for (const auto& mod : piece.modules) modules[mod.name] = mod;
    m.shards.push_back({s.file, s.sha256, s.layers});
  }
  for (auto& [index, l] : layers) {
    // The scores the policy decided on (unquantized model), not the quantize pass's own.
    if (p.scores.measured()) {
      l.lim = p.scores.lim[static_cast<size_t>(index)];
      l.zd = p.scores.zd[static_cast<size_t>(index)];
      l.sensitivity = p.scores.layer_sensitivity(index);
    }
    m.layers.push_back(l);
  }
  for (const auto& choice : p.allocation.modules) m.modules.push_back(modules.at(choice.module.name));

  const ManifestBits bits = manifest_bits(m.modules);
  m.summary.avg_bits = bits.avg_bits;
  m.summary.avg_bits_effective = bits.avg_bits_effective;
  m.summary.quantized_params = bits.quantized_params;
  m.summary.bytes = bytes;
  int64_t original = 0;
  for (const std::string& name : model.tensor_names()) {
    const TensorInfo& info = model.info(name);
    original += static_cast<int64_t>(info.end - info.begin);
  }
  m.summary.original_bytes = original;
  m.summary.compression = bytes > 0 ? static_cast<double>(original) / static_cast<double>(bytes) : 0.0;
  m.summary.phase_seconds = std::move(phase_seconds);
  copy_tokenizer(model_dir, p.spec.output);
  m.ranks = ranks;
  m.run = run;
  // checkpoint_finalize re-hashes every shard: a file changed since its commit stops here.
  checkpoint_finalize(p.spec.output, m);
  return manifest_to_json(m);
}

}  // namespace shardq
