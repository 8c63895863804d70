// Checkpoint: a two-shard checkpoint of random quantized linears (bits 2/3/4/8, with and
// without g_idx, nf4, int8 outliers, awkward shapes) and float tensors reads back bit for bit
// through model.h5; atomic publication; HDF5 failures as io_error naming the file; and
// `shardq inspect`. CheckpointFixture.WriteForPythonReader also produces the fixture that
// tests/python/check_checkpoint.py reads with h5py (set SHARDQ_FIXTURE_DIR).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <optional>
#include <fstream>
#include <random>

#include "common/checkpoint.hpp"
#include "common/error.hpp"
#include "common/sha256.hpp"
#include "kernels/checkpoint_load.hpp"
#include "kernels/quantize.hpp"
#include "support/test_support.hpp"

namespace shardq {
namespace {

using test::TempDir;

struct LinearCase {
  std::string name;
  quant_method method;
  int64_t rows, cols;
  int bits, group_size;
  bool act_order;
  int n_outliers = 0;
};

// A random stored form. `realistic`: finite positive fp16 scales (for dequantization);
// otherwise every array holds arbitrary bit patterns (NaN scales included), which the
// checkpoint must store untouched.
QuantizedLinear random_linear(const LinearCase& c, std::mt19937& rng, bool realistic) {
  QuantizedLinear q;
  q.method = c.method;
  q.rows = c.rows;
  q.cols = c.cols;
  q.bits = c.bits;
  q.group_size = c.group_size;
  q.sym = c.method == quant_method::int8;
  std::uniform_int_distribution<uint32_t> word;
  const int64_t wpr = q.words_per_row();
  const int tail_bits = static_cast<int>((c.cols * c.bits) % 32);
  for (int64_t r = 0; r < c.rows; ++r) {
    for (int64_t w = 0; w < wpr; ++w) {
      uint32_t v = word(rng);
      if (w == wpr - 1 && tail_bits != 0) v &= (uint32_t{1} << tail_bits) - 1;  // unused bits are zero
      q.qweight.push_back(v);
    }
  }
  const int64_t per_group = c.rows * q.n_groups();
  std::uniform_real_distribution<float> scale(0.001f, 0.1f);
  for (int64_t i = 0; i < per_group; ++i)
    q.scales.push_back(realistic ? fp32_to_fp16(scale(rng)) : static_cast<uint16_t>(word(rng)));
  if (c.method != quant_method::nf4) {
    for (int64_t i = 0; i < per_group; ++i)
      q.zeros.push_back(c.method == quant_method::int8 ? int8_zero : static_cast<uint8_t>(word(rng) % (1u << c.bits)));
  }
  if (c.act_order) {
    std::vector<int32_t> perm(static_cast<size_t>(c.cols));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    q.g_idx.resize(perm.size());
    for (size_t i = 0; i < perm.size(); ++i) q.g_idx[static_cast<size_t>(perm[i])] = static_cast<int32_t>(i / q.group_cols());
  }
  for (int j = 0; j < c.n_outliers; ++j) q.outlier_cols.push_back(static_cast<int32_t>(j * 3 + 1));
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < c.rows * c.n_outliers; ++i)
    q.outlier_weights.push_back(realistic ? fp32_to_fp16(normal(rng)) : static_cast<uint16_t>(word(rng)));
  return q;
}

Tensor random_tensor(std::vector<int64_t> shape, std::mt19937& rng) {
  Tensor t(std::move(shape));
  std::normal_distribution<float> normal;
  for (float& v : t.data) v = normal(rng);
  return t;
}

void expect_same(const QuantizedLinear& a, const QuantizedLinear& b, const std::string& name) {
  SCOPED_TRACE(name);
  EXPECT_EQ(a.method, b.method);
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.cols, b.cols);
  EXPECT_EQ(a.bits, b.bits);
  EXPECT_EQ(a.group_size, b.group_size);
  EXPECT_EQ(a.sym, b.sym);
  EXPECT_EQ(a.qweight, b.qweight);
  EXPECT_EQ(a.scales, b.scales);
  EXPECT_EQ(a.zeros, b.zeros);
  EXPECT_EQ(a.g_idx, b.g_idx);
  EXPECT_EQ(a.outlier_cols, b.outlier_cols);
  EXPECT_EQ(a.outlier_weights, b.outlier_weights);
}

struct Fixture {
  std::vector<std::pair<LinearCase, QuantizedLinear>> linears;  // [i] in shard i % 2
  std::vector<std::tuple<std::string, Tensor, dtype>> floats;   // [i] in shard i % 2
  Manifest manifest;
};

// Writes a complete two-shard checkpoint into `dir`.
Fixture write_fixture(const std::filesystem::path& dir, bool realistic, uint32_t seed) {
  std::mt19937 rng(seed);
  const std::vector<LinearCase> cases = {
      {"model.layers.0.self_attn.q_proj", quant_method::gptq, 48, 96, 4, 32, true},
      {"model.layers.1.self_attn.q_proj", quant_method::gptq, 17, 65, 3, 16, false},
      {"model.layers.0.self_attn.k_proj", quant_method::gptq, 7, 127, 3, 32, true},
      {"model.layers.1.self_attn.k_proj", quant_method::rtn, 7, 33, 2, -1, false},
      {"model.layers.0.self_attn.v_proj", quant_method::rtn, 1, 1, 2, 128, false},
      {"model.layers.1.self_attn.v_proj", quant_method::gptq, 5, 172, 8, 64, true},
      {"model.layers.0.mlp.up_proj", quant_method::nf4, 9, 130, 4, nf4_block_size, false},
      {"model.layers.1.mlp.up_proj", quant_method::int8, 5, 12, 8, -1, false, 2},
  };
  Fixture fx;
  for (const LinearCase& c : cases) fx.linears.emplace_back(c, random_linear(c, rng, realistic));
  fx.floats.emplace_back("model.embed_tokens.weight", random_tensor({11, 8}, rng), dtype::f16);
  fx.floats.emplace_back("model.layers.1.mlp.gate_proj.weight", random_tensor({6, 8}, rng), dtype::f16);
  fx.floats.emplace_back("model.layers.0.input_layernorm.weight", random_tensor({8}, rng), dtype::f32);
  fx.floats.emplace_back("model.norm.weight", random_tensor({8}, rng), dtype::f32);

  ShardWriter s0(dir / checkpoint_shard_name(0)), s1(dir / checkpoint_shard_name(1));
  ShardWriter* shards[2] = {&s0, &s1};
  Manifest& m = fx.manifest;
  for (size_t i = 0; i < fx.linears.size(); ++i) {
    const auto& [c, q] = fx.linears[i];
    shards[i % 2]->write_quantized(c.name, q);
    m.modules.push_back(manifest_module(c.name, static_cast<int>(i % 2), q, 0.01 * static_cast<double>(i)));
  }
  for (size_t i = 0; i < fx.floats.size(); ++i) {
    const auto& [name, t, store] = fx.floats[i];
    shards[i % 2]->write_float(name, t, store);
  }
  m.modules.push_back(manifest_module_kept("model.layers.1.mlp.gate_proj", 1, 6, 8, 2));
  s0.close();
  s1.close();

  m.model.path = "models/fixture";
  m.model.architecture = "LlamaForCausalLM";
  m.layers = {{0, 0, 0.1, 0.2, {{"4", 0.01}}}, {1, 1, 0.3, 0.4, {{"4", 0.02}}}};
  m.shards = {{checkpoint_shard_name(0), "", {0}}, {checkpoint_shard_name(1), "", {1}}};
  const ManifestBits bits = manifest_bits(m.modules);
  m.summary.avg_bits = bits.avg_bits;
  m.summary.avg_bits_effective = bits.avg_bits_effective;
  m.summary.quantized_params = bits.quantized_params;
  for (const ManifestModule& mod : m.modules) m.summary.bytes += mod.bytes;
  m.summary.original_bytes = 2 * bits.quantized_params + 2 * 48;
  m.summary.compression = static_cast<double>(m.summary.original_bytes) / static_cast<double>(m.summary.bytes);
  checkpoint_finalize(dir, m);
  return fx;
}

TEST(Checkpoint, RoundTripTwoShardsBitExact) {
  TempDir dir;
  const Fixture fx = write_fixture(dir.path(), false, 1);

  const CheckpointReader reader(dir.path());
  std::vector<std::string> names;
  for (const auto& [c, q] : fx.linears) names.push_back(c.name);
  for (const auto& [name, t, store] : fx.floats) names.push_back(name);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(reader.tensor_names(), names);

  for (const auto& [c, q] : fx.linears) {
    ASSERT_TRUE(reader.is_quantized(c.name));
    expect_same(reader.read_quantized(c.name), q, c.name);
  }
  for (const auto& [name, t, store] : fx.floats) {
    SCOPED_TRACE(name);
    ASSERT_FALSE(reader.is_quantized(name));
    EXPECT_EQ(reader.float_dtype(name), store);
    const Tensor got = reader.read_float(name);
    EXPECT_EQ(got.shape, t.shape);
    for (size_t i = 0; i < t.data.size(); ++i)
      ASSERT_EQ(got.data[i], store == dtype::f16 ? round_to_fp16(t.data[i]) : t.data[i]) << i;
  }

  // The manifest: in model.h5 and manifest.json, shard checksums of the published files.
  const Manifest m = manifest_read(dir.path());
  EXPECT_EQ(manifest_to_json(m), manifest_to_json(fx.manifest));
  EXPECT_EQ(nlohmann::json::parse(reader.manifest_json()), manifest_to_json(fx.manifest));
  for (const ManifestShard& s : m.shards) EXPECT_EQ(s.sha256, sha256_file(dir / s.file));
  for (const char* leftover : {"model.h5.tmp", "manifest.json.tmp", "shard-00000.h5.tmp"})
    EXPECT_FALSE(std::filesystem::exists(dir / leftover)) << leftover;

  // Also readable given the master file itself, after moving the directory.
  std::filesystem::rename(dir.path(), dir.path().string() + "-moved");
  const std::filesystem::path moved = dir.path().string() + "-moved";
  const CheckpointReader again(moved / "model.h5");
  expect_same(again.read_quantized(fx.linears[3].first.name), fx.linears[3].second, "after move");
  std::filesystem::rename(moved, dir.path());
}

TEST(Checkpoint, LoadLinearFp32Dequantizes) {
  TempDir dir;
  const Fixture fx = write_fixture(dir.path(), true, 2);
  const CheckpointReader reader(dir.path());
  for (const auto& [c, q] : fx.linears) {
    const Tensor want = dequantize(q);
    EXPECT_EQ(load_linear_fp32(reader, c.name).data, want.data) << c.name;
    EXPECT_EQ(load_linear_fp32(reader, c.name + ".weight").data, want.data) << c.name;
  }
  const Tensor kept = load_linear_fp32(reader, "model.layers.1.mlp.gate_proj");
  EXPECT_EQ(kept.shape, (std::vector<int64_t>{6, 8}));
  EXPECT_EQ(kept.data[5], round_to_fp16(std::get<1>(fx.floats[1]).data[5]));
  EXPECT_THROW(load_linear_fp32(reader, "model.layers.9.mlp.up_proj"), io_error);
  EXPECT_THROW(reader.read_quantized("model.norm.weight"), io_error);
  EXPECT_THROW(reader.read_float("model.layers.0.mlp.up_proj"), io_error);
}

TEST(Checkpoint, ShardIsTemporaryUntilClose) {
  TempDir dir;
  const auto path = dir / "shard-00000.h5";
  ShardWriter w(path);
  std::mt19937 rng(3);
  w.write_float("model.norm.weight", random_tensor({4}, rng));
  w.write_quantized("model.layers.0.mlp.up_proj", random_linear({"x", quant_method::rtn, 4, 16, 4, 8, false}, rng, true));
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::exists(dir / "shard-00000.h5.tmp"));
  w.close();
  EXPECT_TRUE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(dir / "shard-00000.h5.tmp"));
  EXPECT_EQ(w.names(), (std::vector<std::string>{"model.norm.weight", "model.layers.0.mlp.up_proj"}));
  EXPECT_THROW(w.write_float("late", random_tensor({1}, rng)), io_error);
}

TEST(Checkpoint, WriterDestroyedWithoutCloseLeavesNoShard) {
  TempDir dir;
  std::mt19937 rng(4);
  {
    ShardWriter w(dir / "shard-00000.h5");
    w.write_float("model.norm.weight", random_tensor({4}, rng));
  }
  try {
    ShardWriter w(dir / "shard-00001.h5");
    w.write_float("model.norm.weight", random_tensor({4}, rng));
    QuantizedLinear bad = random_linear({"x", quant_method::gptq, 4, 16, 4, 8, false}, rng, true);
    bad.qweight.pop_back();
    w.write_quantized("model.layers.0.mlp.up_proj", bad);
    FAIL() << "expected io_error";
  } catch (const io_error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.up_proj"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("qweight has 7 elements, expected 8"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

std::string io_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const io_error& e) {
    return e.what();
  }
  return "";
}

// A path below a regular file cannot be created, even by root (ENOTDIR).
TEST(Checkpoint, UncreatableShardIsIoErrorNamingTheFile) {
  TempDir dir;
  std::ofstream(dir / "file") << "x";
  const auto path = dir / "file" / "shard-00000.h5";
  const std::string e = io_error_of([&] { ShardWriter w(path); });
  EXPECT_NE(e.find("H5Fcreate"), std::string::npos) << e;
  EXPECT_NE(e.find(path.string() + ".tmp"), std::string::npos) << e;
  EXPECT_NE(io_error_of([&] { ShardWriter w(dir / "no-such-dir" / "shard-00000.h5"); }).find("no-such-dir"), std::string::npos);
}

TEST(Checkpoint, CorruptFilesAreIoErrorsNamingTheFile) {
  TempDir dir;
  write_fixture(dir.path(), false, 5);
  // A truncated shard: the link from model.h5 no longer resolves to a readable object.
  const auto shard = dir / "shard-00001.h5";
  std::filesystem::resize_file(shard, std::filesystem::file_size(shard) / 2);
  std::string e;
  {
    const CheckpointReader reader(dir.path());
    const std::string name = "model.layers.1.self_attn.q_proj";
    e = io_error_of([&] { reader.read_quantized(name); });
    EXPECT_NE(e.find(name), std::string::npos) << e;
    EXPECT_NE(e.find("model.h5"), std::string::npos) << e;
    EXPECT_NO_THROW(reader.read_quantized("model.layers.0.self_attn.q_proj"));
  }
  // (Closed first: HDF5 would hand back the already-open file instead of reading it again.)
  std::ofstream(dir / "model.h5", std::ios::trunc) << "garbage";
  e = io_error_of([&] { CheckpointReader r(dir.path()); });
  EXPECT_NE(e.find((dir / "model.h5").string()), std::string::npos) << e;
  std::filesystem::remove(dir / "model.h5");
  e = io_error_of([&] { CheckpointReader r(dir.path()); });
  EXPECT_NE(e.find("not a shardq checkpoint"), std::string::npos) << e;
}

TEST(Checkpoint, MasterRejectsANameInTwoShards) {
  TempDir dir;
  std::mt19937 rng(6);
  for (int i = 0; i < 2; ++i) {
    ShardWriter w(dir / checkpoint_shard_name(i));
    w.write_float("model.norm.weight", random_tensor({2}, rng));
    w.close();
  }
  const std::string e = io_error_of([&] { checkpoint_write_master(dir.path(), {"shard-00000.h5", "shard-00001.h5"}, "{}"); });
  EXPECT_NE(e.find("more than one shard"), std::string::npos) << e;
  EXPECT_FALSE(std::filesystem::exists(dir / "model.h5"));
  EXPECT_FALSE(std::filesystem::exists(dir / "model.h5.tmp"));
}

// The fixture for tests/python/check_checkpoint.py: the checkpoint plus, for every quantized
// linear NAME, expected/NAME.f32 = dequantize() of it (raw little-endian float32, row-major).
TEST(CheckpointFixture, WriteForPythonReader) {
  std::optional<TempDir> temp;
  std::filesystem::path dir;
  if (const char* env = std::getenv("SHARDQ_FIXTURE_DIR")) {
    dir = env;
    std::filesystem::create_directories(dir);
  } else {
    temp.emplace();
    dir = temp->path();
  }
  const Fixture fx = write_fixture(dir, true, 7);
  std::filesystem::create_directories(dir / "expected");
  const CheckpointReader reader(dir);
  for (const auto& [c, q] : fx.linears) {
    const Tensor w = dequantize(q);
    ASSERT_EQ(load_linear_fp32(reader, c.name).data, w.data) << c.name;
    std::ofstream out(dir / "expected" / (c.name + ".f32"), std::ios::binary);
    out.write(reinterpret_cast<const char*>(w.data.data()), static_cast<std::streamsize>(w.data.size() * sizeof(float)));
    ASSERT_TRUE(out.good());
  }
}

TEST(Inspect, TableAndJson) {
  TempDir dir;
  const Fixture fx = write_fixture(dir.path(), true, 8);
  const auto table = test::run_command(test::shardq_bin() + " inspect " + dir.path().string());
  ASSERT_EQ(table.exit_code, 0) << table.err;
  for (const auto& mod : fx.manifest.modules) EXPECT_NE(table.out.find(mod.name), std::string::npos) << mod.name;
  EXPECT_NE(table.out.find(fmt::format("{:.4f}", fx.manifest.summary.avg_bits)), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("nf4"), std::string::npos);

  const auto json = test::run_command(test::shardq_bin() + " inspect --json " + dir.path().string());
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(nlohmann::json::parse(json.out), manifest_to_json(fx.manifest));
  // model.h5 alone carries the manifest too.
  const auto master = test::run_command(test::shardq_bin() + " inspect --json " + (dir / "model.h5").string());
  ASSERT_EQ(master.exit_code, 0) << master.err;
  EXPECT_EQ(nlohmann::json::parse(master.out), manifest_to_json(fx.manifest));
}

TEST(Inspect, BadCheckpointIsOneLineAndExit1) {
  TempDir dir;
  for (const std::string& target : {(dir / "missing").string(), dir.path().string()}) {
    const auto r = test::run_command(test::shardq_bin() + " inspect " + target);
    EXPECT_EQ(r.exit_code, 1) << target;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(target), std::string::npos) << r.err;
  }
  std::ofstream(dir / "manifest.json") << R"({"format": "shardq-manifest", "version": 7})";
  const auto r = test::run_command(test::shardq_bin() + " inspect " + dir.path().string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unsupported version 7"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace shardq
