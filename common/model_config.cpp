// config.json of Llama-family models; see model_config.hpp. Defaults follow the Hugging Face
// config classes (LlamaConfig, MistralConfig, Qwen2Config) for keys a file may omit.
#include "common/model_config.hpp"

#include <limits>

#include <fmt/format.h>

#include "common/error.hpp"
#include "common/json_text.hpp"

namespace shardq {
namespace {

using json = nlohmann::json;

struct Arch {
  const char* architecture;
  const char* model_type;
};
constexpr Arch supported_architectures[] = {
    {"LlamaForCausalLM", "llama"},
    {"MistralForCausalLM", "mistral"},
    {"Qwen2ForCausalLM", "qwen2"},
};

// Typed access to config keys; every message names the config and the key.
class Reader {
 public:
  Reader(const json& j, const std::string& context) : j_(j), context_(context) {}

  io_error error(const std::string& key, const std::string& what) const {
    return io_error(fmt::format("config.json ({}): key '{}' {}", context_, key, what));
  }
  unsupported_error unsupported(const std::string& key, const std::string& what) const {
    return unsupported_error(fmt::format("config.json ({}): key '{}': {}", context_, key, what));
  }
  // Present and not null.
  bool has(const std::string& key) const { return j_.contains(key) && !j_[key].is_null(); }
  const json& get(const std::string& key) const { return j_[key]; }

  int required_int(const std::string& key) const {
    if (!j_.contains(key)) throw io_error(fmt::format("config.json ({}): missing key '{}'", context_, key));
    return to_int(key, j_[key]);
  }
  int optional_int(const std::string& key, int fallback) const {
    return has(key) ? to_int(key, j_[key]) : fallback;
  }
  float optional_float(const std::string& key, float fallback) const {
    if (!has(key)) return fallback;
    if (!j_[key].is_number()) throw error(key, fmt::format("must be a number, got {}", json_shown(j_[key])));
    return j_[key].get<float>();
  }
  bool optional_bool(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!j_[key].is_boolean()) throw error(key, fmt::format("must be true or false, got {}", json_shown(j_[key])));
    return j_[key].get<bool>();
  }
  std::string optional_string(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    if (!j_[key].is_string()) throw error(key, fmt::format("must be a string, got {}", json_shown(j_[key])));
    return j_[key].get<std::string>();
  }
  // bos/eos ids: an integer, or a list whose first entry is used (Llama 3 lists several eos).
  int optional_token_id(const std::string& key, int fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_[key];
    if (v.is_array()) {
      if (v.empty()) return fallback;
      return to_int(key, v[0]);
    }
    return to_int(key, v);
  }

 private:
  int to_int(const std::string& key, const json& v) const {
    if (!v.is_number_integer()) throw error(key, fmt::format("must be an integer, got {}", json_shown(v)));
    const int64_t x = v.get<int64_t>();
    if (x < std::numeric_limits<int>::min() || x > std::numeric_limits<int>::max()) {
      throw error(key, fmt::format("is out of range: {}", x));
    }
    return static_cast<int>(x);
  }

  const json& j_;
  const std::string& context_;
};

}  // namespace

int64_t ModelConfig::layer_linear_params() const {
  const int64_t h = hidden_size, q = q_dim(), kv = kv_dim(), ff = intermediate_size;
  return h * q + 2 * h * kv + q * h + 3 * h * ff;
}

ModelConfig model_config_from_json(const nlohmann::json& j, const std::string& context) {
  if (!j.is_object()) throw io_error(fmt::format("config.json ({}): expected a JSON object", context));
  const Reader r(j, context);
  ModelConfig c;
  c.raw = j;

  if (r.has("architectures")) {
    const json& a = r.get("architectures");
    if (!a.is_array() || a.empty() || !a[0].is_string()) {
      throw r.error("architectures", fmt::format("must be a list of names, got {}", json_shown(a)));
    }
    c.architecture = a[0].get<std::string>();
  } else if (r.has("model_type")) {
    const std::string type = r.optional_string("model_type", "");
    for (const Arch& arch : supported_architectures) {
      if (type == arch.model_type) c.architecture = arch.architecture;
    }
    if (c.architecture.empty()) throw r.unsupported("model_type", fmt::format("'{}' is not supported", type));
  } else {
    throw io_error(fmt::format("config.json ({}): missing key 'architectures'", context));
  }
  for (const Arch& arch : supported_architectures) {
    if (c.architecture == arch.architecture) c.model_type = arch.model_type;
  }
  if (c.model_type.empty()) {
    throw r.unsupported("architectures",
                        fmt::format("'{}' is not supported (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)",
                                    c.architecture));
  }

  c.hidden_size = r.required_int("hidden_size");
  c.intermediate_size = r.required_int("intermediate_size");
  c.num_layers = r.required_int("num_hidden_layers");
  c.num_heads = r.required_int("num_attention_heads");
  c.vocab_size = r.required_int("vocab_size");
  c.num_kv_heads = r.optional_int("num_key_value_heads", c.num_heads);
  c.max_position_embeddings = r.optional_int("max_position_embeddings", 2048);
  for (const auto& [key, value] : {std::pair{"hidden_size", c.hidden_size}, {"intermediate_size", c.intermediate_size},
                                   {"num_hidden_layers", c.num_layers}, {"num_attention_heads", c.num_heads},
                                   {"num_key_value_heads", c.num_kv_heads}, {"vocab_size", c.vocab_size},
                                   {"max_position_embeddings", c.max_position_embeddings}}) {
    if (value <= 0) throw r.error(key, fmt::format("must be positive, got {}", value));
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    throw r.error("num_key_value_heads",
                  fmt::format("({}) must divide num_attention_heads ({})", c.num_kv_heads, c.num_heads));
  }
  if (r.has("head_dim")) {
    c.head_dim = r.optional_int("head_dim", 0);
    if (c.head_dim <= 0 || c.head_dim % 2 != 0) {
      throw r.error("head_dim", fmt::format("must be positive and even (rotary pairs), got {}", c.head_dim));
    }
  } else {
    if (c.hidden_size % c.num_heads != 0 || (c.hidden_size / c.num_heads) % 2 != 0) {
      throw r.error("num_attention_heads", fmt::format("({}) must split hidden_size ({}) into even head dims",
                                                       c.num_heads, c.hidden_size));
    }
    c.head_dim = c.hidden_size / c.num_heads;
  }

  // HF defaults: LlamaConfig rms_norm_eps 1e-6, Qwen2 1e-6, Mistral 1e-6.
  c.rms_norm_eps = r.optional_float("rms_norm_eps", 1e-6f);
  c.rope_theta = r.optional_float("rope_theta", 10000.0f);
  if (!(c.rms_norm_eps > 0.0f)) throw r.error("rms_norm_eps", "must be positive");
  if (!(c.rope_theta > 0.0f)) throw r.error("rope_theta", "must be positive");
  c.tie_word_embeddings = r.optional_bool("tie_word_embeddings", false);
  c.bos_token_id = r.optional_token_id("bos_token_id", 1);
  c.eos_token_id = r.optional_token_id("eos_token_id", 2);
  c.torch_dtype = r.optional_string("torch_dtype", r.optional_string("dtype", "float32"));

  // What this version cannot run is refused here, not mis-computed later.
  const std::string act = r.optional_string("hidden_act", "silu");
  if (act != "silu") throw r.unsupported("hidden_act", fmt::format("'{}' is not supported (only silu)", act));
  if (r.has("rope_scaling")) {
    const json& s = r.get("rope_scaling");
    const std::string type = s.is_object() && s.contains("rope_type") && s["rope_type"].is_string()
                                 ? s["rope_type"].get<std::string>()
                             : s.is_object() && s.contains("type") && s["type"].is_string() ? s["type"].get<std::string>()
                                                                                               : json_shown(s);
    throw r.unsupported("rope_scaling", fmt::format("type '{}' is not supported (only null)", type));
  }
  if (c.model_type == "qwen2") {
    c.attention_bias = true;  // Qwen2 always has q/k/v biases and no o_proj bias
    if (r.optional_bool("use_sliding_window", false)) {
      const int window = r.optional_int("sliding_window", c.max_position_embeddings);
      if (window < c.max_position_embeddings) {
        throw r.unsupported("use_sliding_window",
                            fmt::format("sliding window {} < max_position_embeddings {} is not supported", window,
                                        c.max_position_embeddings));
      }
    }
  } else {
    // Llama's attention_bias also puts a bias on o_proj, which the layer code does not carry.
    if (r.optional_bool("attention_bias", false)) {
      throw r.unsupported("attention_bias", "q/k/v/o biases are not supported for " + c.architecture);
    }
    if (r.optional_bool("mlp_bias", false)) throw r.unsupported("mlp_bias", "MLP biases are not supported");
  }
  if (c.model_type == "mistral" && r.has("sliding_window")) {
    const int window = r.optional_int("sliding_window", 0);
    if (window < c.max_position_embeddings) {
      throw r.unsupported("sliding_window", fmt::format("sliding window {} < max_position_embeddings {} is not "
                                                        "supported",
                                                        window, c.max_position_embeddings));
    }
  }
  return c;
}

ModelConfig model_config_load(const std::filesystem::path& model_dir) {
  const std::filesystem::path path = model_dir / "config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw io_error(fmt::format("config.json ({}): no such file (is '{}' a model directory?)", path.string(),
                               model_dir.string()));
  }
  return model_config_from_json(json_file_read(path, fmt::format("config.json ({})", path.string())), path.string());
}

namespace {
// 1e-5f as 1e-05, not 9.999999747378752e-06: the shortest decimal that reads back as the float.
double float_for_json(float f) { return std::stod(fmt::format("{}", f)); }
}  // namespace

nlohmann::json model_config_to_json(const ModelConfig& c) {
  json j = {
      {"architectures", {c.architecture}},
      {"model_type", c.model_type},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_layers},
      {"num_attention_heads", c.num_heads},
      {"num_key_value_heads", c.num_kv_heads},
      {"head_dim", c.head_dim},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_position_embeddings},
      {"rms_norm_eps", float_for_json(c.rms_norm_eps)},
      {"rope_theta", float_for_json(c.rope_theta)},
      {"rope_scaling", nullptr},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"bos_token_id", c.bos_token_id},
      {"eos_token_id", c.eos_token_id},
      {"torch_dtype", c.torch_dtype},
  };
  if (c.model_type != "qwen2") {
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
  }
  return j;
}

std::string layer_prefix(int layer) { return fmt::format("model.layers.{}.", layer); }

}  // namespace shardq
