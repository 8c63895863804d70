// llama2.c checkpoints and `convert llama2c`: every converted tensor equals the llama2.c
// file's bytes (read here independently, offsets counted by hand) after the RoPE row
// permutation (written here as HF's view/transpose); the permutation is checked to turn
// llama2.c's interleaved RoPE into HF's rotate-half; config, tokenizers, dtypes, an unshared
// classifier, and bad inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <random>

#include <nlohmann/json.hpp>

#include "common/dtype.hpp"
#include "common/error.hpp"
#include "common/llama2c.hpp"
#include "common/model_config.hpp"
#include "common/safetensors.hpp"
#include "common/tokenizer.hpp"
#include "support/test_support.hpp"

namespace shardq {
namespace {

namespace fs = std::filesystem;

fs::path stories_dir() { return test::shared_dir() / "models" / "stories260K"; }
fs::path baby_dir() { return test::shared_dir() / "models" / "babyllama_tok105"; }

// A llama2.c file as the README lists it: header, then named float arrays in file order.
struct RawCheckpoint {
  int32_t header[7];
  std::vector<float> values;
  std::map<std::string, std::pair<size_t, size_t>> arrays;  // name -> (first value, count)

  explicit RawCheckpoint(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    in.read(reinterpret_cast<char*>(header), sizeof header);
    values.resize((fs::file_size(path) - 28) / 4);
    in.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(4 * values.size()));
    const size_t dim = header[0], hidden = header[1], layers = header[2], heads = header[3], kv_heads = header[4],
                 vocab = std::abs(header[5]), seq = header[6], kv_dim = dim / heads * kv_heads;
    size_t at = 0;
    const auto take = [&](const std::string& name, size_t count) {
      arrays[name] = {at, count};
      at += count;
    };
    take("token_embedding", vocab * dim);
    take("rms_att", layers * dim);
    take("wq", layers * dim * dim);
    take("wk", layers * kv_dim * dim);
    take("wv", layers * kv_dim * dim);
    take("wo", layers * dim * dim);
    take("rms_ffn", layers * dim);
    take("w1", layers * hidden * dim);
    take("w2", layers * dim * hidden);
    take("w3", layers * hidden * dim);
    take("rms_final", dim);
    take("freq_cis", seq * dim / heads);
    if (header[5] < 0) take("wcls", vocab * dim);
    EXPECT_EQ(at, values.size()) << path;
  }
  // Layer `l`'s slice of a stacked array (or the whole array for l = -1).
  std::vector<float> get(const std::string& name, int l = -1) const {
    auto [first, count] = arrays.at(name);
    if (l >= 0) {
      count /= header[2];
      first += static_cast<size_t>(l) * count;
    }
    return {values.begin() + static_cast<std::ptrdiff_t>(first),
            values.begin() + static_cast<std::ptrdiff_t>(first + count)};
  }
};

// transformers' convert_llama_weights_to_hf.py permute:
// w.view(n_heads, rows / n_heads / 2, 2, cols).transpose(1, 2).reshape(rows, cols).
std::vector<float> permute_ref(const std::vector<float>& w, int n_heads, int rows, int cols) {
  const int half = rows / n_heads / 2;
  std::vector<float> out(w.size());
  for (int h = 0; h < n_heads; ++h)
    for (int a = 0; a < 2; ++a)
      for (int i = 0; i < half; ++i)
        for (int c = 0; c < cols; ++c)
          out[static_cast<size_t>(((h * 2 + a) * half + i) * cols + c)] =
              w[static_cast<size_t>(((h * half + i) * 2 + a) * cols + c)];
  return out;
}

void expect_tensor_eq(const SafetensorsModel& model, const std::string& name, const std::vector<float>& want,
                      std::vector<int64_t> shape, dtype type = dtype::f32) {
  SCOPED_TRACE(name);
  const Tensor got = model.load_fp32(name);
  ASSERT_EQ(got.shape, shape);
  ASSERT_EQ(got.data.size(), want.size());
  EXPECT_EQ(model.info(name).type, type);
  for (size_t i = 0; i < want.size(); ++i) {
    const float expected = type == dtype::f16 ? round_to_fp16(want[i])
                           : type == dtype::bf16 ? bf16_to_fp32(fp32_to_bf16(want[i]))
                                                 : want[i];
    ASSERT_EQ(got.data[i], expected) << "element " << i;
  }
}

// Every tensor of a converted directory against the raw llama2.c file.
void expect_converted_equals(const fs::path& dir, const RawCheckpoint& raw, dtype type) {
  const SafetensorsModel model(dir);
  const int dim = raw.header[0], hidden = raw.header[1], layers = raw.header[2], heads = raw.header[3],
            kv_heads = raw.header[4], vocab = std::abs(raw.header[5]), kv_dim = dim / heads * kv_heads;
  const bool tied = raw.header[5] > 0;
  EXPECT_EQ(model.tensor_names().size(), static_cast<size_t>(2 + 9 * layers + (tied ? 0 : 1)));
  expect_tensor_eq(model, "model.embed_tokens.weight", raw.get("token_embedding"), {vocab, dim}, type);
  expect_tensor_eq(model, "model.norm.weight", raw.get("rms_final"), {dim}, type);
  EXPECT_EQ(model.contains("lm_head.weight"), !tied);
  if (!tied) expect_tensor_eq(model, "lm_head.weight", raw.get("wcls"), {vocab, dim}, type);
  for (int l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    expect_tensor_eq(model, p + "input_layernorm.weight", raw.get("rms_att", l), {dim}, type);
    expect_tensor_eq(model, p + "post_attention_layernorm.weight", raw.get("rms_ffn", l), {dim}, type);
    expect_tensor_eq(model, p + "self_attn.q_proj.weight", permute_ref(raw.get("wq", l), heads, dim, dim), {dim, dim}, type);
    expect_tensor_eq(model, p + "self_attn.k_proj.weight", permute_ref(raw.get("wk", l), kv_heads, kv_dim, dim),
                     {kv_dim, dim}, type);
    expect_tensor_eq(model, p + "self_attn.v_proj.weight", raw.get("wv", l), {kv_dim, dim}, type);
    expect_tensor_eq(model, p + "self_attn.o_proj.weight", raw.get("wo", l), {dim, dim}, type);
    expect_tensor_eq(model, p + "mlp.gate_proj.weight", raw.get("w1", l), {hidden, dim}, type);
    expect_tensor_eq(model, p + "mlp.down_proj.weight", raw.get("w2", l), {dim, hidden}, type);
    expect_tensor_eq(model, p + "mlp.up_proj.weight", raw.get("w3", l), {hidden, dim}, type);
  }
}

TEST(ConvertLlama2c, Stories260KReloadsExactly) {
  test::TempDir dir;
  const auto out = dir / "hf";
  llama2c_convert({stories_dir() / "stories260K.bin", stories_dir() / "tok512.bin", out});
  const RawCheckpoint raw(stories_dir() / "stories260K.bin");
  expect_converted_equals(out, raw, dtype::f32);

  const ModelConfig c = model_config_load(out);
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.num_layers, 5);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(c.torch_dtype, "float32");
  EXPECT_EQ(c.raw.at("architectures"), nlohmann::json::array({"LlamaForCausalLM"}));

  EXPECT_EQ(test::read_text(out / "tokenizer.bin"), test::read_text(stories_dir() / "tok512.bin"));
  EXPECT_NE(fs::status(out / "tokenizer.bin").permissions() & fs::perms::owner_write, fs::perms::none);
  EXPECT_FALSE(fs::exists(out / "tokenizer.model"));
  EXPECT_EQ(tokenizer_load(out)->encode("Once upon a time", true),
            tokenizer_llama2c_load(stories_dir() / "tok512.bin")->encode("Once upon a time", true));
}

TEST(ConvertLlama2c, BabyLlamaWithSentencePieceAndHalfDtypes) {
  const RawCheckpoint raw(baby_dir() / "model5000.bin");
  for (dtype type : {dtype::f16, dtype::bf16}) {
    test::TempDir dir;
    llama2c_convert({baby_dir() / "model5000.bin", baby_dir() / "tok105.model", dir.path(), type});
    expect_converted_equals(dir.path(), raw, type);
    const ModelConfig c = model_config_load(dir.path());
    EXPECT_EQ(c.torch_dtype, type == dtype::f16 ? "float16" : "bfloat16");
    EXPECT_EQ(c.hidden_size, 128);
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_EQ(c.max_position_embeddings, 256);
    EXPECT_EQ(test::read_text(dir / "tokenizer.model"), test::read_text(baby_dir() / "tok105.model"));
    EXPECT_FALSE(fs::exists(dir / "tokenizer.bin"));
    // SentencePiece maps a newline to <unk>; tok105.bin would not.
    EXPECT_EQ(tokenizer_load(dir.path())->encode("a\nb", false)[2], 0);
  }
}

// llama2.c run.c `forward` RoPE on the original rows vs HF apply_rotary_pos_emb
// (rotate_half) on the permuted rows, in double, for random weights and several positions.
TEST(ConvertLlama2c, PermutationTurnsInterleavedRopeIntoRotateHalf) {
  const int n_heads = 3, head_dim = 8, rows = n_heads * head_dim, cols = 5;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  Tensor w({rows, cols});
  for (float& v : w.data) v = normal(rng);
  std::vector<double> x(cols);
  for (double& v : x) v = normal(rng);
  const Tensor wp = llama2c_permute_rope_rows(w, n_heads);
  const auto matvec = [&](const Tensor& m) {
    std::vector<double> y(rows, 0.0);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) y[r] += double{m.at(r, c)} * x[c];
    return y;
  };
  for (int pos : {0, 1, 5, 37}) {
    std::vector<double> q = matvec(w), qh = matvec(wp);
    for (int i = 0; i < rows; i += 2) {  // run.c: pairs (i, i+1), freq by i % head_size
      const double angle = pos / std::pow(10000.0, double(i % head_dim) / head_dim);
      const double v0 = q[i], v1 = q[i + 1];
      q[i] = v0 * std::cos(angle) - v1 * std::sin(angle);
      q[i + 1] = v0 * std::sin(angle) + v1 * std::cos(angle);
    }
    std::vector<double> rotated(rows);
    for (int h = 0; h < n_heads; ++h) {
      for (int j = 0; j < head_dim; ++j) {  // HF: inv_freq[j % (d/2)], rotate_half pairs (p, p + d/2)
        const int p = j % (head_dim / 2);
        const double angle = pos / std::pow(10000.0, 2.0 * p / head_dim);
        const double* v = qh.data() + h * head_dim;
        const double half = j < head_dim / 2 ? -v[j + head_dim / 2] : v[j - head_dim / 2];
        rotated[h * head_dim + j] = v[j] * std::cos(angle) + half * std::sin(angle);
      }
    }
    for (int h = 0; h < n_heads; ++h)
      for (int j = 0; j < head_dim; ++j) {
        const int from = j < head_dim / 2 ? 2 * j : 2 * (j - head_dim / 2) + 1;
        EXPECT_NEAR(rotated[h * head_dim + j], q[h * head_dim + from], 1e-12) << "pos " << pos << " head " << h << " row " << j;
      }
  }
}

// A small random checkpoint with a separate classifier (negative vocab_size in the header).
void write_llama2c(const fs::path& path, const int32_t header[7], uint32_t seed, size_t extra_values = 0) {
  const int dim = header[0], hidden = header[1], layers = header[2], heads = header[3], kv = header[4],
            vocab = std::abs(header[5]), seq = header[6], kv_dim = dim / heads * kv;
  size_t n = size_t(vocab) * dim + size_t(layers) * (2 * dim + 2 * dim * dim + 2 * kv_dim * dim + 3 * hidden * dim) +
             dim + size_t(seq) * (dim / heads) + (header[5] < 0 ? size_t(vocab) * dim : 0) + extra_values;
  std::vector<float> values(n);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (float& v : values) v = uniform(rng);
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header), 28);
  out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(4 * n));
}

TEST(ConvertLlama2c, SeparateClassifierBecomesLmHead) {
  test::TempDir dir;
  const int32_t header[7] = {32, 48, 2, 4, 2, -105, 16};
  write_llama2c(dir / "model.bin", header, 3);
  const Llama2cCheckpoint ck = llama2c_load(dir / "model.bin");
  EXPECT_FALSE(ck.config.shared_classifier);
  EXPECT_EQ(ck.config.vocab_size, 105);
  EXPECT_EQ(llama2c_file_bytes(ck.config), fs::file_size(dir / "model.bin"));
  llama2c_convert({dir / "model.bin", baby_dir() / "tok105.bin", dir / "hf"});
  expect_converted_equals(dir / "hf", RawCheckpoint(dir / "model.bin"), dtype::f32);
  EXPECT_FALSE(model_config_load(dir / "hf").tie_word_embeddings);
}

void expect_io_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    FAIL() << "expected io_error";
  } catch (const io_error& e) {
    for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(ConvertLlama2c, BadCheckpointsAreRefusedWithTheReason) {
  test::TempDir dir;
  const std::string bytes = test::read_text(stories_dir() / "stories260K.bin");
  const auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream(dir / name, std::ios::binary).write(content.data(), static_cast<std::streamsize>(content.size()));
    return dir / name;
  };
  const auto truncated = write("truncated.bin", bytes.substr(0, bytes.size() - 4));
  expect_io_error([&] { llama2c_load(truncated); }, {"truncated.bin", "truncated", "4 missing"});
  const auto oversized = write("oversized.bin", bytes + std::string(8, '\0'));
  expect_io_error([&] { llama2c_load(oversized); }, {"oversized.bin", "8 trailing bytes"});
  const auto short_header = write("header.bin", bytes.substr(0, 20));
  expect_io_error([&] { llama2c_load(short_header); }, {"header.bin", "header"});
  std::string bad_heads = bytes;
  bad_heads[12] = 7;  // n_heads 7 does not divide dim 64
  expect_io_error([&] { llama2c_load(write("heads.bin", bad_heads)); }, {"heads.bin", "n_heads 7"});
  std::string zero_dim = bytes;
  zero_dim[0] = 0;
  expect_io_error([&] { llama2c_load(write("dim.bin", zero_dim)); }, {"dim.bin", "dim = 0"});
  expect_io_error([&] { llama2c_load(dir / "absent.bin"); }, {"absent.bin"});
  // A tokenizer of another vocabulary, before anything is written.
  expect_io_error([&] { llama2c_convert({stories_dir() / "stories260K.bin", baby_dir() / "tok105.bin", dir / "out"}); },
                  {"tok105.bin", "105", "512"});
  EXPECT_FALSE(fs::exists(dir / "out"));
}

TEST(ConvertLlama2c, NonEmptyOutputNeedsForce) {
  test::TempDir dir;
  const auto out = dir / "hf";
  llama2c_convert({stories_dir() / "stories260K.bin", stories_dir() / "tok512.bin", out});
  const std::string weights = test::read_text(out / "model.safetensors");
  // A second conversion of another model into the same directory is refused and changes nothing...
  expect_io_error([&] { llama2c_convert({baby_dir() / "model5000.bin", baby_dir() / "tok105.model", out}); },
                  {out.string(), "not empty", "--force"});
  EXPECT_EQ(test::read_text(out / "model.safetensors"), weights);
  EXPECT_FALSE(fs::exists(out / "tokenizer.model"));
  // ...and with force replaces it, leaving no stale tokenizer behind.
  llama2c_convert({baby_dir() / "model5000.bin", baby_dir() / "tok105.model", out, dtype::f32, true});
  EXPECT_EQ(model_config_load(out).hidden_size, 128);
  EXPECT_TRUE(fs::exists(out / "tokenizer.model"));
  EXPECT_FALSE(fs::exists(out / "tokenizer.bin"));
  // The tokenizer may come from the very directory being replaced.
  llama2c_convert({baby_dir() / "model5000.bin", out / "tokenizer.model", out, dtype::f32, true});
  EXPECT_EQ(test::read_text(out / "tokenizer.model"), test::read_text(baby_dir() / "tok105.model"));
  EXPECT_THROW(llama2c_convert({stories_dir() / "stories260K.bin", stories_dir() / "tok512.bin", dir / "i8", dtype::i8}),
               spec_error);
}

}  // namespace
}  // namespace shardq
