#include "coordinator/shard_output.hpp"

#include <fmt/format.h>

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

}  // namespace

ShardOutput::ShardOutput(const fs::path& dir, int index) : index_(index), writer_(dir / checkpoint_shard_name(index)) {}

void ShardOutput::write_layer(const SafetensorsModel& model, int layer, const LayerWeights& w,
                              const std::vector<QuantizedModule>& modules, double lim, double zd) {
  const std::string prefix = layer_prefix(layer);
  write_float(model, prefix + "input_layernorm.weight", w.attn_norm);
  write_float(model, prefix + "post_attention_layernorm.weight", w.ffn_norm);
  if (!w.q_bias.empty()) {
    write_float(model, prefix + "self_attn.q_proj.bias", w.q_bias);
    write_float(model, prefix + "self_attn.k_proj.bias", w.k_bias);
    write_float(model, prefix + "self_attn.v_proj.bias", w.v_bias);
  }
  for (const QuantizedModule& m : modules) {
    if (m.quantized) {
      writer_.write_quantized(m.name, *m.quantized);
      bytes_ += m.quantized->stored_bytes();
      records_.push_back(manifest_module(m.name, layer, *m.quantized, m.rel_error));
    } else {
      const std::string tensor = m.name + ".weight";
      const TensorInfo& info = model.info(tensor);
      const Tensor t = model.load_fp32(tensor);
      const dtype store = store_dtype_of(info);
      writer_.write_float(tensor, t, store);
      bytes_ += t.numel() * static_cast<int64_t>(dtype_size(store));
      records_.push_back(manifest_module_kept(m.name, layer, t.rows(), t.cols(), static_cast<int>(dtype_size(store))));
    }
  }
  ManifestLayer rec;
  rec.index = layer;
  rec.shard = index_;
  rec.lim = lim;
  rec.zd = zd;
  layers_.push_back(rec);
}

void ShardOutput::write_float(const SafetensorsModel& model, const std::string& name, const Tensor& t) {
  const dtype store = store_dtype_of(model.info(name));
  writer_.write_float(name, t, store);
  bytes_ += t.numel() * static_cast<int64_t>(dtype_size(store));
}

void ShardOutput::write_source_tensor(const SafetensorsModel& model, const std::string& name) {
  write_float(model, name, model.load_fp32(name));
}

std::string ShardOutput::finish() {
  writer_.close();
  fault_point("shard_closed", index_, -1);
  // The records travel as a partial manifest (only layers and modules filled), so the
  // manifest's own (de)serialisation and validation serve the gather too.
  Manifest part;
  part.layers = layers_;
  part.modules = records_;
  return json{{"shard", checkpoint_shard_name(index_)}, {"bytes", bytes_}, {"records", manifest_to_json(part)}}.dump();
}

// Rank 0: the manifest from everyone's records, then model.h5 and manifest.json (last).
json finalize_checkpoint(const JobPlan& p, const std::vector<std::string>& parts, const SafetensorsModel& model,
                         std::map<std::string, double> phase_seconds, const json& ranks) {
  Manifest m;
  const fs::path model_dir = fs::absolute(p.spec.model);
  m.model.path = model_dir.string();
  m.model.architecture = p.config.architecture;
  m.model.config = p.config.raw;
  m.model.files.push_back({"config.json", sha256_file(model_dir / "config.json")});
  for (const std::string& f : model.files()) m.model.files.push_back({f, sha256_file(model_dir / f)});
  if (fs::exists(model_dir / "model.safetensors.index.json"))
    m.model.files.push_back({"model.safetensors.index.json", sha256_file(model_dir / "model.safetensors.index.json")});
  m.spec = job_spec_to_json(p.spec);

  std::map<int, ManifestLayer> layers;
  std::map<std::string, ManifestModule> modules;
  int64_t bytes = 0;
  for (const std::string& part : parts) {
    if (part.empty()) continue;
    const json j = json::parse(part);
    bytes += j.at("bytes").get<int64_t>();
    const Manifest piece = manifest_from_json(j.at("records"), "rank records");
    ManifestShard shard;
    shard.file = j.at("shard").get<std::string>();
    for (const auto& l : piece.layers) {
      layers[l.index] = l;
      shard.layers.push_back(l.index);
    }
    for (const auto& mod : piece.modules) modules[mod.name] = mod;
    m.shards.push_back(shard);
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
  checkpoint_finalize(p.spec.output, m);
  return manifest_to_json(m);
}


}  // namespace shardq
