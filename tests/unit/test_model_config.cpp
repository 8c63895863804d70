// config.json parsing: the three supported architectures, defaults, and every refusal with
// the key it names.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "common/error.hpp"
#include "common/model_config.hpp"
#include "support/test_support.hpp"

namespace shardq {
namespace {

using json = nlohmann::json;

json llama_json() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
    "rope_scaling": null, "hidden_act": "silu", "tie_word_embeddings": false,
    "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16", "attention_bias": false})");
}

template <typename E>
std::string error_of(const json& j) {
  try {
    model_config_from_json(j, "/m/config.json");
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "other exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "nothing thrown for " << j.dump();
  return "";
}

TEST(ModelConfig, Llama2) {
  const ModelConfig c = model_config_from_json(llama_json(), "ctx");
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 11008);
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 32);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(c.torch_dtype, "float16");
  EXPECT_EQ(c.raw, llama_json());
}

TEST(ModelConfig, GqaDefaultsAndExplicitHeadDim) {
  json j = llama_json();
  j.erase("num_key_value_heads");
  EXPECT_EQ(model_config_from_json(j, "ctx").num_kv_heads, 32);
  j["num_key_value_heads"] = 8;
  j["head_dim"] = 64;
  const ModelConfig c = model_config_from_json(j, "ctx");
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.q_dim(), 32 * 64);
  EXPECT_EQ(c.kv_dim(), 8 * 64);
  // Naive sum over the seven linears, [out, in] each.
  const int64_t h = 4096, q = 2048, kv = 512, ff = 11008;
  EXPECT_EQ(c.layer_linear_params(), q * h + kv * h + kv * h + h * q + ff * h + ff * h + h * ff);
}

TEST(ModelConfig, OptionalKeysTakeHfDefaults) {
  json j = llama_json();
  for (const char* k : {"rms_norm_eps", "rope_theta", "max_position_embeddings", "tie_word_embeddings",
                        "bos_token_id", "eos_token_id", "torch_dtype", "hidden_act", "rope_scaling",
                        "attention_bias"}) {
    j.erase(k);
  }
  const ModelConfig c = model_config_from_json(j, "ctx");
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
}

TEST(ModelConfig, Llama3EosListTakesFirst) {
  json j = llama_json();
  j["eos_token_id"] = {128001, 128008, 128009};
  j["rope_theta"] = 500000.0;
  const ModelConfig c = model_config_from_json(j, "ctx");
  EXPECT_EQ(c.eos_token_id, 128001);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
}

TEST(ModelConfig, MistralSlidingWindow) {
  json j = llama_json();
  j["architectures"] = {"MistralForCausalLM"};
  j["model_type"] = "mistral";
  j["max_position_embeddings"] = 32768;
  j["sliding_window"] = nullptr;
  EXPECT_EQ(model_config_from_json(j, "ctx").model_type, "mistral");
  j["sliding_window"] = 32768;
  EXPECT_EQ(model_config_from_json(j, "ctx").architecture, "MistralForCausalLM");
  j["sliding_window"] = 4096;
  const std::string msg = error_of<unsupported_error>(j);
  EXPECT_NE(msg.find("'sliding_window'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("/m/config.json"), std::string::npos) << msg;
}

TEST(ModelConfig, Qwen2HasQkvBiasesAndTiedEmbeddings) {
  json j = llama_json();
  j.erase("attention_bias");
  j["architectures"] = {"Qwen2ForCausalLM"};
  j["model_type"] = "qwen2";
  j["tie_word_embeddings"] = true;
  j["use_sliding_window"] = false;
  j["sliding_window"] = 4096;
  const ModelConfig c = model_config_from_json(j, "ctx");
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_TRUE(c.attention_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  j["use_sliding_window"] = true;
  EXPECT_EQ(model_config_from_json(j, "ctx").model_type, "qwen2") << "window 4096 covers the context 4096";
  j["max_position_embeddings"] = 32768;
  EXPECT_NE(error_of<unsupported_error>(j).find("'use_sliding_window'"), std::string::npos);
}

TEST(ModelConfig, RefusesWhatItCannotRun) {
  const auto refused = [](const char* key, const json& value, const char* named) {
    json j = llama_json();
    j[key] = value;
    const std::string msg = error_of<unsupported_error>(j);
    EXPECT_NE(msg.find(std::string("'") + named + "'"), std::string::npos) << key << ": " << msg;
    EXPECT_NE(msg.find("/m/config.json"), std::string::npos) << msg;
  };
  refused("architectures", json::array({"GPT2LMHeadModel"}), "architectures");
  refused("rope_scaling", json{{"type", "linear"}, {"factor", 2.0}}, "rope_scaling");
  refused("rope_scaling", json{{"rope_type", "llama3"}, {"factor", 8.0}}, "rope_scaling");
  refused("hidden_act", "gelu", "hidden_act");
  refused("attention_bias", true, "attention_bias");
  refused("mlp_bias", true, "mlp_bias");
  json j = llama_json();
  j["rope_scaling"] = {{"type", "dynamic"}};
  EXPECT_NE(error_of<unsupported_error>(j).find("dynamic"), std::string::npos);
}

TEST(ModelConfig, MissingAndIllTypedKeysAreIoErrors) {
  json j = llama_json();
  j.erase("hidden_size");
  EXPECT_EQ(error_of<io_error>(j), "config.json (/m/config.json): missing key 'hidden_size'");
  j = llama_json();
  j["num_hidden_layers"] = "32";
  EXPECT_EQ(error_of<io_error>(j), "config.json (/m/config.json): key 'num_hidden_layers' must be an integer, got \"32\"");
  j = llama_json();
  j["rms_norm_eps"] = "small";
  EXPECT_NE(error_of<io_error>(j).find("'rms_norm_eps' must be a number"), std::string::npos);
  j = llama_json();
  j["tie_word_embeddings"] = 1;
  EXPECT_NE(error_of<io_error>(j).find("'tie_word_embeddings' must be true or false"), std::string::npos);
  j = llama_json();
  j["num_key_value_heads"] = 5;
  EXPECT_NE(error_of<io_error>(j).find("'num_key_value_heads'"), std::string::npos);
  j = llama_json();
  j["vocab_size"] = 0;
  EXPECT_NE(error_of<io_error>(j).find("'vocab_size' must be positive"), std::string::npos);
  j = llama_json();
  j.erase("architectures");
  j.erase("model_type");
  EXPECT_EQ(error_of<io_error>(j), "config.json (/m/config.json): missing key 'architectures'");
  EXPECT_NE(error_of<io_error>(json::array()).find("expected a JSON object"), std::string::npos);
}

TEST(ModelConfig, ArchitectureFromModelTypeWhenListMissing) {
  json j = llama_json();
  j.erase("architectures");
  j["model_type"] = "mistral";
  EXPECT_EQ(model_config_from_json(j, "ctx").architecture, "MistralForCausalLM");
}

TEST(ModelConfig, ToJsonRoundTrips) {
  for (const char* arch : {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}) {
    json j = llama_json();
    j.erase("attention_bias");
    j["architectures"] = {arch};
    j["num_key_value_heads"] = 4;
    j["tie_word_embeddings"] = true;
    const ModelConfig a = model_config_from_json(j, "ctx");
    const json written = model_config_to_json(a);
    EXPECT_EQ(written["rms_norm_eps"].get<double>(), 1e-05) << "shortest decimal, not the float's expansion";
    const ModelConfig b = model_config_from_json(written, "ctx");
    EXPECT_EQ(a.architecture, b.architecture);
    EXPECT_EQ(a.model_type, b.model_type);
    EXPECT_EQ(a.num_kv_heads, b.num_kv_heads);
    EXPECT_EQ(a.head_dim, b.head_dim);
    EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
    EXPECT_EQ(a.attention_bias, b.attention_bias);
    EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
    EXPECT_EQ(a.rope_theta, b.rope_theta);
    EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
    EXPECT_EQ(a.torch_dtype, b.torch_dtype);
  }
}

TEST(ModelConfig, LoadFromDirectory) {
  test::TempDir dir;
  {
    std::ofstream out(dir / "config.json");
    out << llama_json().dump(2);
  }
  EXPECT_EQ(model_config_load(dir.path()).hidden_size, 4096);
  {
    std::ofstream out(dir / "config.json");
    out << "{ not json";
  }
  try {
    model_config_load(dir.path());
    FAIL();
  } catch (const io_error& e) {
    EXPECT_NE(std::string(e.what()).find((dir / "config.json").string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
  EXPECT_THROW(model_config_load(dir / "nowhere"), io_error);
}

TEST(ModelConfig, LayerPrefix) {
  EXPECT_EQ(layer_prefix(0), "model.layers.0.");
  EXPECT_EQ(layer_prefix(31), "model.layers.31.");
}

}  // namespace
}  // namespace shardq
