// Loading Llama-family weights into fp32 Tensors; see llama_weights.hpp.
#include "worker/llama_weights.hpp"

#include <cmath>
#include <functional>
#include <random>

#include <fmt/format.h>

#include "common/error.hpp"
#include "common/checkpoint.hpp"
#include "common/checkpoint_journal.hpp"
#include "common/manifest.hpp"
#include "common/safetensors.hpp"
#include "kernels/checkpoint_load.hpp"

namespace shardq {

std::array<std::pair<const char*, const Tensor*>, 7> LayerWeights::linears() const {
  return {{{"self_attn.q_proj", &q_proj},
           {"self_attn.k_proj", &k_proj},
           {"self_attn.v_proj", &v_proj},
           {"self_attn.o_proj", &o_proj},
           {"mlp.gate_proj", &gate_proj},
           {"mlp.up_proj", &up_proj},
           {"mlp.down_proj", &down_proj}}};
}

std::array<std::pair<const char*, Tensor*>, 7> LayerWeights::linears() {
  auto c = std::as_const(*this).linears();
  std::array<std::pair<const char*, Tensor*>, 7> out;
  for (size_t i = 0; i < c.size(); ++i) out[i] = {c[i].first, const_cast<Tensor*>(c[i].second)};
  return out;
}

namespace {

// Where the tensors of a layer or of the model come from: `read(name, shape)` returns the
// tensor the config says has that shape. Loading and the up-front check (llama_tensors_check)
// walk the same names through the same code.
using TensorRead = std::function<Tensor(const std::string& name, const std::vector<int64_t>& shape)>;

const TensorInfo& checked_info(const SafetensorsModel& model, const std::string& name, const std::vector<int64_t>& shape) {
  const TensorInfo& info = model.info(name);
  if (info.shape != shape)
    throw io_error(fmt::format("tensor '{}' in '{}' has shape {}, the config implies {}", name, info.file,
                               shape_string(info.shape), shape_string(shape)));
  if (info.type != dtype::f32 && info.type != dtype::f16 && info.type != dtype::bf16)
    throw io_error(fmt::format("tensor '{}' in '{}' is {}, not a floating-point weight type (F32, F16, BF16)", name,
                               info.file, dtype_name(info.type)));
  return info;
}

TensorRead loader(const SafetensorsModel& model) {
  return [&model](const std::string& name, const std::vector<int64_t>& shape) {
    checked_info(model, name, shape);
    return model.load_fp32(name);
  };
}

TensorRead checker(const SafetensorsModel& model) {
  return [&model](const std::string& name, const std::vector<int64_t>& shape) {
    checked_info(model, name, shape);
    return Tensor();
  };
}

// The model's config and selected layer range, no tensors yet.
ModelWeights empty_model(const ModelConfig& c, const WeightsSelection& sel) {
  ModelWeights m;
  m.config = c;
  m.layer_begin = sel.layer_begin;
  m.layer_end = sel.layer_end < 0 ? c.num_layers : sel.layer_end;
  if (m.layer_begin < 0 || m.layer_begin > m.layer_end || m.layer_end > c.num_layers)
    throw spec_error("layers", fmt::format("layer range [{}, {}) outside the model's {} layers", m.layer_begin,
                                           m.layer_end, c.num_layers));
  return m;
}

void check_range(const ModelConfig& config, int layer) {
  if (layer < 0 || layer >= config.num_layers)
    throw spec_error("layers", fmt::format("layer {} outside the model's {} layers", layer, config.num_layers));
}

LayerWeights layer_weights_read(const ModelConfig& c, int layer, const TensorRead& read) {
  check_range(c, layer);
  const std::string p = layer_prefix(layer);
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), inter = c.intermediate_size;
  LayerWeights w;
  w.attn_norm = read(p + "input_layernorm.weight", {h});
  w.q_proj = read(p + "self_attn.q_proj.weight", {q, h});
  w.k_proj = read(p + "self_attn.k_proj.weight", {kv, h});
  w.v_proj = read(p + "self_attn.v_proj.weight", {kv, h});
  w.o_proj = read(p + "self_attn.o_proj.weight", {h, q});
  if (c.attention_bias) {
    w.q_bias = read(p + "self_attn.q_proj.bias", {q});
    w.k_bias = read(p + "self_attn.k_proj.bias", {kv});
    w.v_bias = read(p + "self_attn.v_proj.bias", {kv});
  }
  w.ffn_norm = read(p + "post_attention_layernorm.weight", {h});
  w.gate_proj = read(p + "mlp.gate_proj.weight", {inter, h});
  w.up_proj = read(p + "mlp.up_proj.weight", {inter, h});
  w.down_proj = read(p + "mlp.down_proj.weight", {h, inter});
  return w;
}

ModelWeights model_weights_read(const ModelConfig& c, const WeightsSelection& sel, const TensorRead& read) {
  ModelWeights m = empty_model(c, sel);
  const int64_t h = c.hidden_size, vocab = c.vocab_size;
  if (sel.embedding || (sel.head && c.tie_word_embeddings)) m.embed_tokens = read("model.embed_tokens.weight", {vocab, h});
  if (sel.head) {
    m.final_norm = read("model.norm.weight", {h});
    if (!c.tie_word_embeddings) m.lm_head = read("lm_head.weight", {vocab, h});
  }
  for (int l = m.layer_begin; l < m.layer_end; ++l) m.layers.push_back(layer_weights_read(c, l, read));
  return m;
}

}  // namespace

LayerWeights layer_weights_load(const SafetensorsModel& model, const ModelConfig& c, int layer) {
  return layer_weights_read(c, layer, loader(model));
}

ModelWeights model_weights_load(const SafetensorsModel& model, const ModelConfig& c, const WeightsSelection& sel) {
  return model_weights_read(c, sel, loader(model));
}

void llama_tensors_check(const SafetensorsModel& model, const ModelConfig& c) {
  WeightsSelection all;
  all.head = true;
  model_weights_read(c, all, checker(model));
  // A layer the config does not count would be dropped without a word.
  const std::string beyond = layer_prefix(c.num_layers);
  for (const std::string& name : model.tensor_names()) {
    if (name.rfind(beyond, 0) == 0)
      throw io_error(fmt::format("tensor '{}' in '{}' belongs to a layer beyond the {} of config.json "
                                 "(num_hidden_layers)", name, model.info(name).file, c.num_layers));
  }
}

namespace {

// A shardq checkpoint, finished or not (an unfinished one is refused by manifest_read with
// a hint to resume it, instead of being taken for a model directory without config.json).
bool is_checkpoint(const std::filesystem::path& path) {
  return path.extension() == ".h5" || std::filesystem::exists(path / manifest_file_name) || journal_exists(path);
}

std::filesystem::path checkpoint_dir(const std::filesystem::path& path) {
  return path.extension() == ".h5" ? path.parent_path() : path;
}

// Shape check shared by both sources: every tensor a layer or the model holds must match the
// config (a dequantized linear carries its own shape).
void check_shape(const Tensor& t, const std::string& name, const std::vector<int64_t>& shape, const std::string& file) {
  if (t.shape != shape)
    throw io_error(fmt::format("tensor '{}' in '{}' has shape {}, the config implies {}", name, file,
                               shape_string(t.shape), shape_string(shape)));
}

// A shardq checkpoint: quantized linears dequantized (kernels/checkpoint_load.hpp), tensors
// kept in floating point converted; the config comes from the manifest.
ModelWeights load_checkpoint(const std::filesystem::path& path, const WeightsSelection& sel) {
  const std::filesystem::path dir = checkpoint_dir(path);
  const Manifest manifest = manifest_read(dir);
  const ModelConfig c = model_config_from_json(manifest.model.config, (dir / manifest_file_name).string());
  const CheckpointReader reader(dir);
  const std::string file = reader.master_path().string();
  auto load = [&](const std::string& name, std::vector<int64_t> shape, bool linear) {
    Tensor t = linear ? load_linear_fp32(reader, name) : reader.read_float(name);
    check_shape(t, name, shape, file);
    return t;
  };
  ModelWeights m = empty_model(c, sel);
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), inter = c.intermediate_size, vocab = c.vocab_size;
  if (sel.embedding || (sel.head && c.tie_word_embeddings))
    m.embed_tokens = load("model.embed_tokens.weight", {vocab, h}, false);
  if (sel.head) {
    m.final_norm = load("model.norm.weight", {h}, false);
    if (!c.tie_word_embeddings) m.lm_head = load("lm_head.weight", {vocab, h}, true);
  }
  for (int l = m.layer_begin; l < m.layer_end; ++l) {
    const std::string p = layer_prefix(l);
    LayerWeights w;
    w.attn_norm = load(p + "input_layernorm.weight", {h}, false);
    w.ffn_norm = load(p + "post_attention_layernorm.weight", {h}, false);
    if (c.attention_bias) {
      w.q_bias = load(p + "self_attn.q_proj.bias", {q}, false);
      w.k_bias = load(p + "self_attn.k_proj.bias", {kv}, false);
      w.v_bias = load(p + "self_attn.v_proj.bias", {kv}, false);
    }
    const std::array<std::vector<int64_t>, 7> shapes{{{q, h}, {kv, h}, {kv, h}, {h, q}, {inter, h}, {inter, h}, {h, inter}}};
    auto linears = w.linears();
    for (size_t i = 0; i < linears.size(); ++i) *linears[i].second = load(p + linears[i].first + ".weight", shapes[i], true);
    m.layers.push_back(std::move(w));
  }
  return m;
}

}  // namespace

ModelWeights model_weights_load(const std::filesystem::path& path, const WeightsSelection& sel) {
  if (is_checkpoint(path)) return load_checkpoint(path, sel);
  const ModelConfig config = model_config_load(path);
  const SafetensorsModel model(path);
  return model_weights_load(model, config, sel);
}

std::filesystem::path model_tokenizer_dir(const std::filesystem::path& path) {
  if (!is_checkpoint(path)) return path;
  const std::filesystem::path dir = checkpoint_dir(path);
  if (std::filesystem::exists(dir / "tokenizer.model") || std::filesystem::exists(dir / "tokenizer.bin")) return dir;
  return manifest_read(dir).model.path;
}

namespace {

Tensor random_tensor(std::mt19937_64& rng, std::vector<int64_t> shape, float center, float spread) {
  Tensor t(std::move(shape));
  // Mapping of the 64-bit draw to [-1, 1) written out: std::uniform_real_distribution's output
  // is implementation-defined and would make the test models differ between standard libraries.
  for (float& x : t.data) x = center + spread * static_cast<float>(static_cast<double>(rng() >> 11) * 0x1p-52 - 1.0);
  return t;
}

}  // namespace

LayerWeights layer_weights_random(const ModelConfig& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), inter = c.intermediate_size;
  const float sh = 1.0f / std::sqrt(static_cast<float>(h));
  LayerWeights w;
  w.attn_norm = random_tensor(rng, {h}, 1.0f, 0.1f);
  w.q_proj = random_tensor(rng, {q, h}, 0.0f, sh);
  w.k_proj = random_tensor(rng, {kv, h}, 0.0f, sh);
  w.v_proj = random_tensor(rng, {kv, h}, 0.0f, sh);
  w.o_proj = random_tensor(rng, {h, q}, 0.0f, 1.0f / std::sqrt(static_cast<float>(q)));
  if (c.attention_bias) {
    w.q_bias = random_tensor(rng, {q}, 0.0f, 0.1f);
    w.k_bias = random_tensor(rng, {kv}, 0.0f, 0.1f);
    w.v_bias = random_tensor(rng, {kv}, 0.0f, 0.1f);
  }
  w.ffn_norm = random_tensor(rng, {h}, 1.0f, 0.1f);
  w.gate_proj = random_tensor(rng, {inter, h}, 0.0f, sh);
  w.up_proj = random_tensor(rng, {inter, h}, 0.0f, sh);
  w.down_proj = random_tensor(rng, {h, inter}, 0.0f, 1.0f / std::sqrt(static_cast<float>(inter)));
  return w;
}

ModelWeights model_weights_random(const ModelConfig& c, uint64_t seed) {
  ModelWeights m;
  m.config = c;
  m.layer_end = c.num_layers;
  std::mt19937_64 rng(seed);
  m.embed_tokens = random_tensor(rng, {c.vocab_size, c.hidden_size}, 0.0f, 1.0f);
  m.final_norm = random_tensor(rng, {c.hidden_size}, 1.0f, 0.1f);
  if (!c.tie_word_embeddings)
    m.lm_head = random_tensor(rng, {c.vocab_size, c.hidden_size}, 0.0f, 1.0f / std::sqrt(static_cast<float>(c.hidden_size)));
  for (int l = 0; l < c.num_layers; ++l) m.layers.push_back(layer_weights_random(c, rng()));
  return m;
}

}  // namespace shardq
