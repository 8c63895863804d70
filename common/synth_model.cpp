// Deterministic synthetic Llama checkpoints; the value model is described in synth_model.hpp.
#include "common/synth_model.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/thread_pool.hpp"

namespace shardq {
namespace {

constexpr uint64_t golden_gamma = 0x9e3779b97f4a7c15ull;

// splitmix64's output function (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// Element `index` of the splitmix64 stream seeded with `key`, without walking the stream.
uint64_t counter_hash(uint64_t key, uint64_t index) { return mix64(key + (index + 1) * golden_gamma); }

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return h;
}

// Irwin-Hall(4) from the four 16-bit lanes of one hash, scaled to mean 0, variance 1: a
// cheap bell shape (bounded at +-3.46) that costs no log/cos per element.
float normal_from_hash(uint64_t h) {
  const uint32_t s = static_cast<uint32_t>(h & 0xffff) + static_cast<uint32_t>((h >> 16) & 0xffff) +
                     static_cast<uint32_t>((h >> 32) & 0xffff) + static_cast<uint32_t>(h >> 48);
  constexpr float scale = 1.7320508f / 65536.0f;  // sqrt(12 / 4) / 2^16
  return (static_cast<float>(s) - 131070.0f) * scale;
}

enum class synth_kind { linear, embedding, norm };

struct SynthTensor {
  std::string name;
  std::vector<int64_t> shape;
  synth_kind kind;
};

std::vector<SynthTensor> synth_layout(const ModelConfig& c) {
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), ff = c.intermediate_size;
  std::vector<SynthTensor> t;
  t.push_back({"model.embed_tokens.weight", {c.vocab_size, h}, synth_kind::embedding});
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = layer_prefix(l);
    t.push_back({p + "input_layernorm.weight", {h}, synth_kind::norm});
    t.push_back({p + "self_attn.q_proj.weight", {q, h}, synth_kind::linear});
    t.push_back({p + "self_attn.k_proj.weight", {kv, h}, synth_kind::linear});
    t.push_back({p + "self_attn.v_proj.weight", {kv, h}, synth_kind::linear});
    t.push_back({p + "self_attn.o_proj.weight", {h, q}, synth_kind::linear});
    t.push_back({p + "post_attention_layernorm.weight", {h}, synth_kind::norm});
    t.push_back({p + "mlp.gate_proj.weight", {ff, h}, synth_kind::linear});
    t.push_back({p + "mlp.up_proj.weight", {ff, h}, synth_kind::linear});
    t.push_back({p + "mlp.down_proj.weight", {h, ff}, synth_kind::linear});
  }
  t.push_back({"model.norm.weight", {h}, synth_kind::norm});
  t.push_back({"lm_head.weight", {c.vocab_size, h}, synth_kind::linear});
  return t;
}

// Outlier input columns: chosen by (seed, in_features) so all linears over one space agree.
std::vector<float> column_factors(uint64_t seed, int64_t cols) {
  const uint64_t key = mix64(seed ^ 0x636f6c756d6e73ull ^ mix64(static_cast<uint64_t>(cols)));
  std::vector<float> f(static_cast<std::size_t>(cols));
  const uint64_t always = mix64(key) % static_cast<uint64_t>(cols);  // at least one, also for tiny models
  for (int64_t c = 0; c < cols; ++c) {
    const uint64_t h = counter_hash(key, static_cast<uint64_t>(c));
    const bool outlier = (h % 1000) < 8 || static_cast<uint64_t>(c) == always;
    f[static_cast<std::size_t>(c)] = outlier ? 4.0f + 8.0f * static_cast<float>(h >> 40) / 16777216.0f : 1.0f;
  }
  return f;
}

// Values [first, first + n) of one tensor, in fp32; col_factor is column_factors(seed,
// shape[1]) for a 2-D tensor (unused for norms).
void synth_values(uint64_t seed, const SynthTensor& t, const std::vector<float>& col_factor, uint64_t first,
                  std::size_t n, float* out) {
  const uint64_t key = mix64(seed ^ fnv1a(t.name));
  if (t.kind == synth_kind::norm) {
    for (std::size_t i = 0; i < n; ++i) out[i] = 1.0f + 0.05f * normal_from_hash(counter_hash(key, first + i));
    return;
  }
  const auto cols = static_cast<uint64_t>(t.shape[1]);
  const uint64_t row_key = mix64(key ^ 0x726f77ull);
  const float in_scale = t.kind == synth_kind::linear ? 1.0f / std::sqrt(static_cast<float>(cols)) : 0.02f;
  std::size_t i = 0;
  while (i < n) {
    const uint64_t index = first + i;
    const uint64_t r = index / cols;
    const float row_scale = t.kind == synth_kind::linear
                                ? in_scale * std::exp(0.25f * normal_from_hash(counter_hash(row_key, r)))
                                : in_scale;
    const auto end = static_cast<std::size_t>(std::min<uint64_t>(n, i + (r + 1) * cols - index));
    for (uint64_t c = index - r * cols; i < end; ++i, ++c) {
      out[i] = normal_from_hash(counter_hash(key, first + i)) * row_scale * col_factor[c];
    }
  }
}

std::string torch_dtype_name(dtype t) {
  switch (t) {
    case dtype::f32: return "float32";
    case dtype::f16: return "float16";
    case dtype::bf16: return "bfloat16";
    default: throw spec_error("dtype", fmt::format("must be f32, f16 or bf16, not {}", dtype_name(t)));
  }
}

void write_json(const std::filesystem::path& path, const nlohmann::json& j) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << j.dump(2) << "\n";
  if (!out.flush()) throw io_error(fmt::format("cannot write '{}'", path.string()));
}

}  // namespace

ModelConfig synth_config(const SynthOptions& o) {
  for (const auto& [field, value] : {std::pair{"layers", o.layers}, {"hidden", o.hidden},
                                     {"intermediate", o.intermediate}, {"heads", o.heads},
                                     {"kv-heads", o.kv_heads}, {"vocab", o.vocab}, {"context", o.context}}) {
    if (value <= 0) throw spec_error(field, fmt::format("must be positive, got {}", value));
  }
  if (o.hidden % o.heads != 0 || (o.hidden / o.heads) % 2 != 0) {
    throw spec_error("heads", fmt::format("{} heads must split hidden {} into even head dims", o.heads, o.hidden));
  }
  if (o.heads % o.kv_heads != 0) {
    throw spec_error("kv-heads", fmt::format("{} must divide heads ({})", o.kv_heads, o.heads));
  }
  if (o.max_shard_bytes == 0) throw spec_error("max-shard-bytes", "must be positive");
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.hidden_size = o.hidden;
  c.intermediate_size = o.intermediate;
  c.num_layers = o.layers;
  c.num_heads = o.heads;
  c.num_kv_heads = o.kv_heads;
  c.head_dim = o.hidden / o.heads;
  c.vocab_size = o.vocab;
  c.max_position_embeddings = o.context;
  c.rms_norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.tie_word_embeddings = false;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  c.torch_dtype = torch_dtype_name(o.type);
  c.raw = model_config_to_json(c);
  return c;
}

std::vector<TensorToWrite> synth_tensors(const SynthOptions& options) {
  const ModelConfig config = synth_config(options);
  const dtype type = options.type;
  const uint64_t seed = options.seed;
  std::vector<TensorToWrite> out;
  for (SynthTensor& t : synth_layout(config)) {
    auto col_factor = std::make_shared<const std::vector<float>>(
        t.kind == synth_kind::norm ? std::vector<float>() : column_factors(seed, t.shape[1]));
    // Every value depends on its index alone, so the blocks of a chunk fill on the worker
    // threads in any order with the same bytes (an 8B-shaped model is 8·10⁹ values).
    auto fill = [seed, type, t, col_factor](uint64_t offset, std::span<std::byte> bytes) {
      const std::size_t elem = dtype_size(type);
      constexpr std::size_t block = 4096;
      const uint64_t first = offset / elem;
      const std::size_t n = bytes.size() / elem;
      parallel_for(static_cast<int>((n + block - 1) / block), [&](int b) {
        float values[block];
        const std::size_t i = static_cast<std::size_t>(b) * block, m = std::min(block, n - i);
        synth_values(seed, t, *col_factor, first + i, m, values);
        convert_from_fp32(type, values, bytes.data() + i * elem, m);
      });
    };
    out.push_back({t.name, type, t.shape, std::move(fill)});
  }
  return out;
}

SynthSummary synth_model_write(const SynthOptions& options, const std::filesystem::path& output_dir) {
  namespace fs = std::filesystem;
  const ModelConfig config = synth_config(options);

  std::error_code ec;
  // The size is known from the config alone: a model the disk cannot take is refused before
  // anything is generated (or allocated: absurd shapes used to end in a bare bad_alloc).
  // (in double: at absurd shapes the int64 products of layer_linear_params overflow)
  const double h = config.hidden_size, q = static_cast<double>(config.q_dim()), kv = static_cast<double>(config.kv_dim());
  const double layer = 2 * h * q + 2 * h * kv + 3 * h * config.intermediate_size + 2 * h;
  const double params = 2 * h * config.vocab_size + h + config.num_layers * layer;
  const double needed = params * static_cast<double>(dtype_size(options.type));
  fs::path existing = fs::absolute(output_dir, ec);
  while (!existing.empty() && !fs::exists(existing, ec) && existing != existing.parent_path()) existing = existing.parent_path();
  const fs::space_info space = fs::space(existing, ec);
  if (!ec && needed > static_cast<double>(space.available))
    throw io_error(fmt::format("the model needs {:.1f} GB ({:.3g} parameters), '{}' has {:.1f} GB free", needed / 1e9,
                               params, output_dir.string(), static_cast<double>(space.available) / 1e9));
  fs::create_directories(output_dir, ec);
  if (ec) throw io_error(fmt::format("cannot create output directory '{}': {}", output_dir.string(), ec.message()));
  for (const auto& entry : fs::directory_iterator(output_dir)) {
    const std::string name = entry.path().filename().string();
    if (name == "config.json" || entry.path().extension() == ".safetensors" ||
        name == "model.safetensors.index.json") {
      throw io_error(fmt::format("output directory '{}' already holds a model ({}); choose a new directory",
                                 output_dir.string(), name));
    }
  }

  std::vector<TensorToWrite> tensors = synth_tensors(options);

  // Greedy in file order: a shard takes tensors until the next would push it past the limit.
  std::vector<std::vector<TensorToWrite>> shards(1);
  uint64_t shard_bytes = 0;
  SynthSummary summary;
  for (TensorToWrite& t : tensors) {
    const uint64_t size = static_cast<uint64_t>(Tensor::numel_of(t.shape)) * dtype_size(t.type);
    if (!shards.back().empty() && shard_bytes + size > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shard_bytes += size;
    summary.params += Tensor::numel_of(t.shape);
    summary.bytes += size;
    shards.back().push_back(std::move(t));
  }

  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  nlohmann::json weight_map = nlohmann::json::object();
  for (std::size_t s = 0; s < shards.size(); ++s) {
    const std::string file = shards.size() == 1 ? std::string("model.safetensors")
                                                : fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size());
    safetensors_write(output_dir / file, shards[s], metadata);
    for (const TensorToWrite& t : shards[s]) weight_map[t.name] = file;
    summary.files.push_back(file);
  }
  // The index and config go last, so an interrupted run leaves no loadable half-model.
  if (shards.size() > 1) {
    write_json(output_dir / "model.safetensors.index.json",
               {{"metadata", {{"total_size", summary.bytes}}}, {"weight_map", weight_map}});
  }
  write_json(output_dir / "config.json", config.raw);
  return summary;
}

}  // namespace shardq
