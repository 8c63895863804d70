// Manifest: bit averages on hand-computed cases, JSON round trip and validation, atomic
// write; sha256 against the FIPS 180-2 test vectors.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "common/error.hpp"
#include "common/manifest.hpp"
#include "common/sha256.hpp"
#include "support/test_support.hpp"

namespace shardq {
namespace {

using test::TempDir;

ManifestModule module(const std::string& name, int64_t rows, int64_t cols, int bits, int group, bool zeros,
                      bool act_order = false, int64_t outliers = 0) {
  ManifestModule m;
  m.name = name;
  m.layer = 0;
  m.shape = {rows, cols};
  m.bits = bits;
  m.method = bits >= 16 ? "fp16" : "gptq";
  m.group_size = group;
  m.zeros = zeros;
  m.act_order = act_order;
  m.outliers = outliers;
  return m;
}

// Two 4-bit g128 asymmetric linears [256, 512] and one [256, 256] kept at 16 bits:
//   params   = 2·131072 + 65536 = 327680
//   bits     = 2·131072·4 + 65536·16 = 2097152             -> avg_bits 6.4
//   overhead = 2·(256·4·16 scales + 256·4·4 zeros) = 40960 -> avg_bits_effective 2138112/327680 = 6.525
TEST(Manifest, AvgBitsHandComputedMixed) {
  const std::vector<ManifestModule> mods = {module("a", 256, 512, 4, 128, true), module("b", 256, 512, 4, 128, true),
                                            module("kept", 256, 256, 16, -1, false)};
  const ManifestBits b = manifest_bits(mods);
  EXPECT_EQ(b.avg_bits, 6.4);
  EXPECT_EQ(b.avg_bits_effective, 6.525);
  EXPECT_EQ(b.quantized_params, 262144);
}

// 3-bit per-row symmetric with act-order [10, 100]: codes 3000, scales 10·16, g_idx 100·32
// -> 3000 + 160 + 3200 = 6360 bits. int8 [4, 8] with zeros not counted (sym) and 2 outliers:
// codes 256, scales 4·16 = 64, outliers 2·(4·16 + 32) = 192 -> 512. Partial last group:
// 2-bit g3 asymmetric [2, 7] -> 3 groups: codes 28, scales 2·3·16 = 96, zeros 2·3·2 = 12.
TEST(Manifest, EffectiveBitsCountsGidxOutliersPartialGroups) {
  const std::vector<ManifestModule> mods = {module("a", 10, 100, 3, -1, false, true), module("b", 4, 8, 8, -1, false, false, 2),
                                            module("c", 2, 7, 2, 3, true)};
  EXPECT_EQ(manifest_overhead_bits(mods[0]), 3360);
  EXPECT_EQ(manifest_overhead_bits(mods[1]), 256);
  EXPECT_EQ(manifest_overhead_bits(mods[2]), 108);
  const ManifestBits b = manifest_bits(mods);
  EXPECT_DOUBLE_EQ(b.avg_bits, (3000.0 + 256 + 28) / (1000 + 32 + 14));
  EXPECT_DOUBLE_EQ(b.avg_bits_effective, (6360.0 + 512 + 28 + 108) / (1000 + 32 + 14));
  EXPECT_EQ(b.quantized_params, 1046);
  EXPECT_EQ(manifest_bits({}).avg_bits, 0.0);
}

TEST(Manifest, ModuleFromQuantizedLinear) {
  QuantizedLinear q;
  q.method = quant_method::rtn;
  q.rows = 3;
  q.cols = 10;
  q.bits = 3;
  q.group_size = 4;
  q.qweight.assign(3 * 1, 0);
  q.scales.assign(3 * 3, 0);
  q.zeros.assign(3 * 3, 0);
  q.g_idx.assign(10, 0);
  const ManifestModule m = manifest_module("model.layers.2.mlp.up_proj", 2, q, 0.25);
  EXPECT_EQ(m.method, "rtn");
  EXPECT_EQ(m.shape, (std::vector<int64_t>{3, 10}));
  EXPECT_TRUE(m.zeros);
  EXPECT_TRUE(m.act_order);
  EXPECT_EQ(m.bytes, 3 * 4 + 9 * 2 + 9 + 10 * 4);
  q.sym = true;
  EXPECT_FALSE(manifest_module("x", 0, q, 0).zeros);
  EXPECT_EQ(quant_method_parse("nf4", "ctx"), quant_method::nf4);
  EXPECT_THROW(quant_method_parse("awq", "ctx"), io_error);
}

Manifest sample_manifest() {
  Manifest m;
  m.model.path = "models/x";
  m.model.architecture = "LlamaForCausalLM";
  m.model.config = {{"hidden_size", 64}};
  m.model.files = {{"model.safetensors", std::string(64, 'a')}};
  m.spec = {{"quant", {{"bits", 4}}}};
  m.summary.avg_bits = 3.5;
  m.summary.avg_bits_effective = 3.75;
  m.summary.quantized_params = 123;
  m.summary.bytes = 1000;
  m.summary.original_bytes = 4000;
  m.summary.compression = 4.0;
  m.summary.phase_seconds = {{"calibrate", 1.5}, {"quantize", 2.25}};
  m.layers = {{0, 0, 0.12, 0.31, {{"2", 0.5}, {"4", 0.125}}}, {1, 1, 0.2, 0.1, {}}};
  m.modules = {module("model.layers.0.self_attn.q_proj", 64, 64, 4, 128, true, true)};
  m.modules[0].rel_error = std::nan("");
  m.modules[0].bytes = 77;
  m.shards = {{"shard-00000.h5", std::string(64, 'b'), {0}}, {"shard-00001.h5", std::string(64, 'c'), {1}}};
  return m;
}

TEST(Manifest, JsonRoundTripKeepsEveryField) {
  const Manifest m = sample_manifest();
  const nlohmann::json j = manifest_to_json(m);
  EXPECT_EQ(j["format"], "shardq-manifest");
  EXPECT_EQ(j["version"], 1);
  EXPECT_TRUE(j["modules"][0]["rel_error"].is_null());
  const Manifest r = manifest_from_json(j, "test");
  EXPECT_EQ(manifest_to_json(r), j);
  EXPECT_TRUE(std::isnan(r.modules[0].rel_error));
  EXPECT_EQ(r.layers[0].sensitivity.at("4"), 0.125);
  EXPECT_EQ(r.shards[1].layers, std::vector<int>{1});
}

TEST(Manifest, ValidationNamesTheField) {
  const nlohmann::json good = manifest_to_json(sample_manifest());
  auto message = [](const nlohmann::json& j) {
    try {
      manifest_from_json(j, "'ckpt/manifest.json'");
    } catch (const io_error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  nlohmann::json j = good;
  j["format"] = "other";
  EXPECT_NE(message(j).find("format"), std::string::npos);
  j = good;
  j["version"] = 2;
  EXPECT_NE(message(j).find("unsupported version 2"), std::string::npos);
  j = good;
  j["modules"][0].erase("bits");
  EXPECT_NE(message(j).find("modules[0].bits: missing"), std::string::npos) << message(j);
  j = good;
  j["summary"]["bytes"] = "many";
  EXPECT_NE(message(j).find("summary.bytes: expected an integer"), std::string::npos) << message(j);
  EXPECT_NE(message(j).find("ckpt/manifest.json"), std::string::npos);
  j = good;
  j["modules"][0]["extra_field"] = 1;  // more fields are welcome
  EXPECT_EQ(message(j), "");
}

TEST(Manifest, WriteIsAtomicAndReadsBack) {
  TempDir dir;
  const Manifest m = sample_manifest();
  manifest_write(dir.path(), m);
  EXPECT_FALSE(std::filesystem::exists(dir / "manifest.json.tmp"));
  EXPECT_EQ(manifest_to_json(manifest_read(dir.path())), manifest_to_json(m));
  EXPECT_EQ(manifest_to_json(manifest_read(dir / "manifest.json")), manifest_to_json(m));
}

TEST(Manifest, DirectoryWithoutManifestIsIncomplete) {
  TempDir dir;
  std::ofstream(dir / "model.h5") << "x";
  try {
    manifest_read(dir.path());
    FAIL() << "expected io_error";
  } catch (const io_error& e) {
    EXPECT_NE(std::string(e.what()).find("not a complete shardq checkpoint"), std::string::npos) << e.what();
  }
  std::ofstream(dir / "manifest.json") << "{ not json";
  EXPECT_THROW(manifest_read(dir.path()), io_error);
}

// FIPS 180-2 appendix B vectors.
TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex(std::string_view("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex(std::string_view("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(std::string_view("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, FileEqualsBufferAcrossBlocks) {
  TempDir dir;
  std::string data(3 * (1 << 20) + 5, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 2654435761u) >> 13);
  std::ofstream(dir / "f.bin", std::ios::binary) << data;
  EXPECT_EQ(sha256_file(dir / "f.bin"), sha256_hex(std::string_view(data)));
  EXPECT_THROW(sha256_file(dir / "missing.bin"), io_error);
}

}  // namespace
}  // namespace shardq
