// Synthetic models: byte-exact determinism per seed, values independent of sharding, of the
// writer's chunking and (up to rounding) of the stored dtype, and the statistics promised in
// synth_model.hpp, measured here with double accumulation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "common/error.hpp"
#include "common/safetensors.hpp"
#include "common/synth_model.hpp"
#include "support/test_support.hpp"

namespace shardq {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

SynthOptions small_options() {
  SynthOptions o;
  o.layers = 3;
  o.hidden = 128;
  o.intermediate = 344;
  o.heads = 4;
  o.kv_heads = 2;
  o.vocab = 300;
  o.seed = 11;
  return o;
}

std::vector<std::string> dir_listing(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(Synth, SameSeedSameBytes) {
  TempDir a, b;
  SynthOptions o = small_options();
  o.max_shard_bytes = 100000;
  const SynthSummary sa = synth_model_write(o, a / "m");
  synth_model_write(o, b / "m");
  ASSERT_GT(sa.files.size(), 2u);
  ASSERT_EQ(dir_listing(a / "m"), dir_listing(b / "m"));
  for (const std::string& name : dir_listing(a / "m")) {
    EXPECT_EQ(test::read_text(a / "m" / name), test::read_text(b / "m" / name)) << name;
  }
  TempDir c;
  o.seed = 12;
  synth_model_write(o, c / "m");
  EXPECT_NE(test::read_text(a / "m" / sa.files[0]), test::read_text(c / "m" / sa.files[0]));
}

TEST(Synth, ShardingDoesNotChangeValues) {
  TempDir a, b;
  SynthOptions o = small_options();
  const SynthSummary single = synth_model_write(o, a / "m");
  o.max_shard_bytes = 70000;
  const SynthSummary sharded = synth_model_write(o, b / "m");
  EXPECT_EQ(single.files, std::vector<std::string>{"model.safetensors"});
  EXPECT_GT(sharded.files.size(), 3u);
  EXPECT_EQ(single.params, sharded.params);
  EXPECT_EQ(single.bytes, sharded.bytes);
  EXPECT_FALSE(fs::exists(a / "m" / "model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(b / "m" / "model.safetensors.index.json"));

  const SafetensorsModel ma(a / "m"), mb(b / "m");
  ASSERT_EQ(ma.tensor_names(), mb.tensor_names());
  int64_t params = 0;
  for (const std::string& name : ma.tensor_names()) {
    const auto x = ma.bytes(name), y = mb.bytes(name);
    ASSERT_EQ(x.size(), y.size()) << name;
    EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size()), 0) << name;
    params += ma.info(name).numel();
  }
  EXPECT_EQ(params, single.params);
}

TEST(Synth, FillIsIndependentOfPieceSizes) {
  SynthOptions o = small_options();
  for (const TensorToWrite& t : synth_tensors(o)) {
    const std::size_t bytes = static_cast<std::size_t>(Tensor::numel_of(t.shape)) * dtype_size(t.type);
    std::vector<std::byte> whole(bytes), pieces(bytes);
    t.fill(0, whole);
    // Uneven pieces, including ones that start mid-row.
    std::size_t at = 0, step = 2;
    while (at < bytes) {
      const std::size_t n = std::min(step, bytes - at);
      t.fill(at, std::span<std::byte>(pieces.data() + at, n));
      at += n;
      step = step * 3 % 1000 + 2;
    }
    ASSERT_EQ(std::memcmp(whole.data(), pieces.data(), bytes), 0) << t.name;
  }
}

TEST(Synth, DtypeOnlyChangesRounding) {
  TempDir a, b;
  SynthOptions o = small_options();
  o.type = dtype::f32;
  synth_model_write(o, a / "m");
  o.type = dtype::f16;
  synth_model_write(o, b / "m");
  const SafetensorsModel f32(a / "m"), f16(b / "m");
  EXPECT_EQ(model_config_load(a / "m").torch_dtype, "float32");
  EXPECT_EQ(model_config_load(b / "m").torch_dtype, "float16");
  for (const std::string& name : f32.tensor_names()) {
    const Tensor x = f32.load_fp32(name), y = f16.load_fp32(name);
    ASSERT_EQ(x.numel(), y.numel());
    for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(round_to_fp16(x.data[i]), y.data[i]) << name << "[" << i << "]";
  }
}

TEST(Synth, ConfigAndTensorSetMatchLlama) {
  TempDir dir;
  const SynthOptions o = small_options();
  synth_model_write(o, dir / "m");
  const ModelConfig c = model_config_load(dir / "m");
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.num_layers, o.layers);
  EXPECT_EQ(c.hidden_size, o.hidden);
  EXPECT_EQ(c.intermediate_size, o.intermediate);
  EXPECT_EQ(c.num_heads, o.heads);
  EXPECT_EQ(c.num_kv_heads, o.kv_heads);
  EXPECT_EQ(c.vocab_size, o.vocab);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  for (const char* key : {"architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "num_key_value_heads", "vocab_size", "max_position_embeddings",
                          "rms_norm_eps", "rope_theta", "tie_word_embeddings", "torch_dtype", "bos_token_id",
                          "eos_token_id"}) {
    EXPECT_TRUE(c.raw.contains(key)) << key;
  }

  const SafetensorsModel m(dir / "m");
  const int64_t h = c.hidden_size, hd = c.head_dim, ff = c.intermediate_size;
  std::map<std::string, std::vector<int64_t>> want = {{"model.embed_tokens.weight", {c.vocab_size, h}},
                                                      {"model.norm.weight", {h}},
                                                      {"lm_head.weight", {c.vocab_size, h}}};
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = layer_prefix(l);
    want[p + "input_layernorm.weight"] = {h};
    want[p + "post_attention_layernorm.weight"] = {h};
    want[p + "self_attn.q_proj.weight"] = {c.num_heads * hd, h};
    want[p + "self_attn.k_proj.weight"] = {c.num_kv_heads * hd, h};
    want[p + "self_attn.v_proj.weight"] = {c.num_kv_heads * hd, h};
    want[p + "self_attn.o_proj.weight"] = {h, c.num_heads * hd};
    want[p + "mlp.gate_proj.weight"] = {ff, h};
    want[p + "mlp.up_proj.weight"] = {ff, h};
    want[p + "mlp.down_proj.weight"] = {h, ff};
  }
  ASSERT_EQ(m.tensor_names().size(), want.size());
  for (const auto& [name, shape] : want) {
    EXPECT_EQ(m.info(name).shape, shape) << name;
    EXPECT_EQ(m.info(name).type, dtype::f16) << name;
  }
}

TEST(Synth, WeightStatisticsLookTrained) {
  TempDir dir;
  SynthOptions o = small_options();
  o.hidden = 256;
  o.intermediate = 688;
  o.layers = 1;
  synth_model_write(o, dir / "m");
  const SafetensorsModel m(dir / "m");
  for (const char* name : {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight",
                           "model.layers.0.mlp.down_proj.weight", "lm_head.weight"}) {
    const Tensor w = m.load_fp32(name);
    const int64_t rows = w.rows(), cols = w.cols();
    double sum = 0, sq = 0;
    std::vector<double> col_sq(static_cast<size_t>(cols)), row_sq(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const double v = w.at(r, c);
        sum += v;
        sq += v * v;
        col_sq[c] += v * v / rows;
        row_sq[r] += v * v / cols;
      }
    }
    const double n = static_cast<double>(rows * cols);
    const double std = std::sqrt(sq / n - (sum / n) * (sum / n));
    const double target = 1.0 / std::sqrt(static_cast<double>(cols));
    EXPECT_NEAR(sum / n, 0.0, 0.05 * target) << name;
    EXPECT_GT(std, 0.8 * target) << name;
    EXPECT_LT(std, 2.0 * target) << name;
    // Outlier input columns: the loudest column's rms far above the median column's.
    std::vector<double> sorted = col_sq;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_GT(std::sqrt(sorted.back() / sorted[sorted.size() / 2]), 3.0) << name;
    // Per-output-channel scales: row rms spread like a log-normal with sigma 0.25.
    double log_sum = 0, log_sq = 0;
    for (double s : row_sq) {
      log_sum += 0.5 * std::log(s);
      log_sq += 0.25 * std::log(s) * std::log(s);
    }
    const double log_std = std::sqrt(log_sq / rows - (log_sum / rows) * (log_sum / rows));
    EXPECT_GT(log_std, 0.15) << name;
    EXPECT_LT(log_std, 0.45) << name;
  }
  for (const char* name : {"model.norm.weight", "model.layers.0.input_layernorm.weight"}) {
    const Tensor g = m.load_fp32(name);
    double sum = 0;
    for (float v : g.data) sum += v;
    EXPECT_NEAR(sum / g.numel(), 1.0, 0.02) << name;
    EXPECT_GT(*std::min_element(g.data.begin(), g.data.end()), 0.7f) << name;
  }
  // Outlier columns of q_proj and up_proj (both read the hidden stream) coincide.
  const auto outlier_columns = [&](const char* name) {
    const Tensor w = m.load_fp32(name);
    std::vector<double> col(static_cast<size_t>(w.cols()));
    for (int64_t c = 0; c < w.cols(); ++c) {
      for (int64_t r = 0; r < w.rows(); ++r) col[c] += static_cast<double>(w.at(r, c)) * w.at(r, c) / w.rows();
    }
    std::vector<double> sorted = col;
    std::sort(sorted.begin(), sorted.end());
    std::set<int64_t> out;
    for (int64_t c = 0; c < w.cols(); ++c) {
      if (std::sqrt(col[c] / sorted[sorted.size() / 2]) > 2.5) out.insert(c);
    }
    return out;
  };
  const std::set<int64_t> q = outlier_columns("model.layers.0.self_attn.q_proj.weight");
  EXPECT_FALSE(q.empty());
  EXPECT_EQ(q, outlier_columns("model.layers.0.mlp.up_proj.weight"));
}

TEST(Synth, RefusesBadShapesAndExistingModels) {
  SynthOptions o = small_options();
  o.kv_heads = 3;
  try {
    synth_config(o);
    FAIL();
  } catch (const spec_error& e) {
    EXPECT_EQ(e.field(), "kv-heads");
  }
  o = small_options();
  o.hidden = 130;
  EXPECT_THROW(synth_config(o), spec_error);
  o = small_options();
  o.layers = 0;
  EXPECT_THROW(synth_config(o), spec_error);

  TempDir dir;
  synth_model_write(small_options(), dir / "m");
  try {
    synth_model_write(small_options(), dir / "m");
    FAIL();
  } catch (const io_error& e) {
    EXPECT_NE(std::string(e.what()).find("already holds a model"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace shardq
