// safetensors reader/writer: round trips for every float dtype checked against an
// independent byte-level parse, sharded == single, and one io_error per malformed input
// (each corrupt file is written here, byte by byte).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/safetensors.hpp"
#include "support/test_support.hpp"

namespace shardq {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// A safetensors file from a header text and `data_size` bytes of data.
std::string file_bytes(const std::string& header, std::size_t data_size) {
  return le64(header.size()) + header + std::string(data_size, '\x01');
}

// Deterministic test values spanning several binades, signs, and exact zeros.
Tensor make_tensor(std::vector<int64_t> shape, int salt) {
  Tensor t(std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double x = std::sin(0.37 * static_cast<double>(i + 1) + salt) * std::pow(2.0, (i % 23) - 11);
    t.data[static_cast<size_t>(i)] = (i % 13 == 0) ? 0.0f : static_cast<float>(x);
  }
  return t;
}

// The value a store in `type` holds: fp32 passes through; fp16 / bf16 round to nearest even.
float stored_value(dtype type, float x) {
  if (type == dtype::f16) return fp16_to_fp32(fp32_to_fp16(x));
  if (type == dtype::bf16) return bf16_to_fp32(fp32_to_bf16(x));
  return x;
}

// Independent reader: the raw header JSON, the data start, and the bytes of one tensor.
struct RawFile {
  nlohmann::json header;
  uint64_t data_start = 0;
  std::string bytes;
};
RawFile read_raw(const fs::path& path) {
  RawFile r;
  r.bytes = test::read_text(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<uint8_t>(r.bytes[i]);
  r.header = nlohmann::json::parse(r.bytes.substr(8, n));
  r.data_start = 8 + n;
  return r;
}

template <typename Fn>
std::string io_error_message(Fn&& fn) {
  try {
    fn();
  } catch (const io_error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected io_error, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected io_error, nothing was thrown";
  return "";
}

class SafetensorsRoundTrip : public ::testing::TestWithParam<dtype> {};

TEST_P(SafetensorsRoundTrip, ValuesAndLayoutMatchIndependentParse) {
  const dtype type = GetParam();
  TempDir dir;
  const std::vector<std::vector<int64_t>> shapes = {{1}, {7, 17}, {65, 3}, {0, 5}, {}, {2, 3, 4}};
  std::vector<Tensor> tensors;
  std::vector<std::pair<std::string, const Tensor*>> named;
  for (std::size_t i = 0; i < shapes.size(); ++i) tensors.push_back(make_tensor(shapes[i], static_cast<int>(i)));
  for (std::size_t i = 0; i < shapes.size(); ++i) named.emplace_back(std::string("t").append(std::to_string(i)), &tensors[i]);
  const fs::path path = dir / "x.safetensors";
  safetensors_write_tensors(path, named, type);

  const RawFile raw = read_raw(path);
  EXPECT_EQ(raw.data_start % 8, 0u) << "header padded to 8 bytes";
  const SafetensorsFile file(path);
  ASSERT_EQ(file.tensors().size(), shapes.size());
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const std::string name = named[i].first;
    const nlohmann::json& entry = raw.header.at(name);
    EXPECT_EQ(entry.at("dtype").get<std::string>(), dtype_name(type));
    EXPECT_EQ(entry.at("shape").get<std::vector<int64_t>>(), shapes[i]);
    const auto begin = entry.at("data_offsets")[0].get<uint64_t>();
    const auto end = entry.at("data_offsets")[1].get<uint64_t>();
    const std::size_t elem = dtype_size(type);
    ASSERT_EQ(end - begin, tensors[i].numel() * elem) << name;

    const TensorInfo& info = file.info(name);
    EXPECT_EQ(info.begin, begin);
    EXPECT_EQ(info.end, end);
    EXPECT_EQ(info.file, "x.safetensors");
    const Tensor loaded = file.load_fp32(name);
    EXPECT_EQ(loaded.shape, shapes[i]);
    const auto span = file.bytes(name);
    ASSERT_EQ(span.size(), end - begin);
    for (int64_t k = 0; k < tensors[i].numel(); ++k) {
      // Decode the stored element straight from the file bytes, little-endian.
      const std::size_t at = raw.data_start + begin + static_cast<std::size_t>(k) * elem;
      uint32_t bits = 0;
      for (std::size_t b = 0; b < elem; ++b) bits |= static_cast<uint32_t>(static_cast<uint8_t>(raw.bytes[at + b])) << (8 * b);
      const float from_bytes = type == dtype::f32    ? std::bit_cast<float>(bits)
                               : type == dtype::f16 ? fp16_to_fp32(static_cast<uint16_t>(bits))
                                                    : bf16_to_fp32(static_cast<uint16_t>(bits));
      const float want = stored_value(type, tensors[i].data[static_cast<size_t>(k)]);
      ASSERT_EQ(from_bytes, want) << name << "[" << k << "]";
      ASSERT_EQ(loaded.data[static_cast<size_t>(k)], want) << name << "[" << k << "]";
      ASSERT_EQ(std::memcmp(span.data() + k * elem, raw.bytes.data() + at, elem), 0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SafetensorsRoundTrip, ::testing::Values(dtype::f32, dtype::f16, dtype::bf16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(Safetensors, StreamingWriterCallsFillInOrderWithWholeElements) {
  TempDir dir;
  // 3M int32 values: more than one 4 MB chunk, so the fill is called several times.
  const int64_t n = 3 << 20;
  std::vector<uint64_t> offsets;
  TensorToWrite t{"ids", dtype::i32, {n}, [&](uint64_t offset, std::span<std::byte> out) {
                    offsets.push_back(offset);
                    ASSERT_EQ(offset % 4, 0u);
                    ASSERT_EQ(out.size() % 4, 0u);
                    for (std::size_t i = 0; i < out.size() / 4; ++i) {
                      const auto v = static_cast<int32_t>(offset / 4 + i);
                      std::memcpy(out.data() + 4 * i, &v, 4);
                    }
                  }};
  safetensors_write(dir / "ids.safetensors", {t}, {{"format", "pt"}});
  ASSERT_GT(offsets.size(), 1u);
  for (std::size_t i = 1; i < offsets.size(); ++i) EXPECT_GT(offsets[i], offsets[i - 1]);

  const SafetensorsFile file(dir / "ids.safetensors");
  EXPECT_EQ(file.metadata().at("format"), "pt");
  const auto bytes = file.bytes("ids");
  ASSERT_EQ(bytes.size(), static_cast<size_t>(n) * 4);
  for (int64_t i = 0; i < n; i += 4099) {
    int32_t v;
    std::memcpy(&v, bytes.data() + 4 * i, 4);
    ASSERT_EQ(v, i);
  }
  EXPECT_FALSE(fs::exists(dir / "ids.safetensors.tmp"));
}

TEST(Safetensors, IntegerDtypesParseButLoadFp32RefusesThem) {
  TempDir dir;
  const auto path = dir / "m.safetensors";
  write_bytes(path, file_bytes(R"({"ids":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},)"
                               R"("mask":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}})",
                               11));
  const SafetensorsFile file(path);
  EXPECT_EQ(file.info("ids").type, dtype::i32);
  EXPECT_EQ(file.info("mask").type, dtype::u8);
  EXPECT_EQ(file.bytes("mask").size(), 3u);
  try {
    file.load_fp32("ids");
    FAIL() << "load_fp32 of I32 must throw";
  } catch (const unsupported_error& e) {
    EXPECT_NE(std::string(e.what()).find("'ids'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("I32"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
}

TEST(Safetensors, ShardedModelEqualsSingleFile) {
  TempDir single, sharded;
  std::vector<Tensor> tensors;
  for (int i = 0; i < 5; ++i) tensors.push_back(make_tensor({3 + i, 4}, i));
  std::vector<std::pair<std::string, const Tensor*>> all, first, second;
  nlohmann::json weight_map;
  for (int i = 0; i < 5; ++i) {
    const std::string name = "model.layers." + std::to_string(i) + ".w";
    all.emplace_back(name, &tensors[i]);
    (i < 2 ? first : second).emplace_back(name, &tensors[i]);
    weight_map[name] = i < 2 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  safetensors_write_tensors(single / "model.safetensors", all, dtype::bf16);
  safetensors_write_tensors(sharded / "model-00001-of-00002.safetensors", first, dtype::bf16);
  safetensors_write_tensors(sharded / "model-00002-of-00002.safetensors", second, dtype::bf16);
  write_bytes(sharded / "model.safetensors.index.json",
              nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump());

  const SafetensorsModel a(single.path()), b(sharded.path());
  EXPECT_EQ(a.files(), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(b.files(), (std::vector<std::string>{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}));
  ASSERT_EQ(a.tensor_names(), b.tensor_names());
  for (const std::string& name : a.tensor_names()) {
    EXPECT_TRUE(b.contains(name));
    EXPECT_EQ(a.load_fp32(name).data, b.load_fp32(name).data) << name;
    EXPECT_EQ(a.info(name).shape, b.info(name).shape);
    EXPECT_EQ(b.info(name).file, weight_map[name].get<std::string>());
  }
  // A single .safetensors path works as a model too.
  const SafetensorsModel c(single / "model.safetensors");
  EXPECT_EQ(c.tensor_names(), a.tensor_names());
}

TEST(Safetensors, MissingTensorNamesTensorAndModelDirectory) {
  TempDir dir;
  const Tensor t = make_tensor({2}, 0);
  safetensors_write_tensors(dir / "model.safetensors", {{"a", &t}});
  const SafetensorsModel model(dir.path());
  EXPECT_FALSE(model.contains("model.norm.weight"));
  const std::string msg = io_error_message([&] { model.info("model.norm.weight"); });
  EXPECT_NE(msg.find("'model.norm.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir.path().string()), std::string::npos) << msg;
  EXPECT_NE(io_error_message([&] { model.load_fp32("nope"); }).find("nope"), std::string::npos);
}

TEST(Safetensors, DirectoryWithoutModelFilesIsAnError) {
  TempDir dir;
  const std::string msg = io_error_message([&] { SafetensorsModel m(dir.path()); });
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir.path().string()), std::string::npos) << msg;
  EXPECT_NE(io_error_message([&] { SafetensorsModel m(dir / "absent"); }).find("does not exist"), std::string::npos);
}

TEST(Safetensors, WriterRejectsRepeatedNamesAndNegativeShapes) {
  TempDir dir;
  auto zero = [](uint64_t, std::span<std::byte> out) { std::memset(out.data(), 0, out.size()); };
  EXPECT_NE(io_error_message([&] {
              safetensors_write(dir / "a.safetensors", {{"w", dtype::f32, {1}, zero}, {"w", dtype::f32, {1}, zero}});
            }).find("'w'"),
            std::string::npos);
  EXPECT_NE(io_error_message([&] { safetensors_write(dir / "a.safetensors", {{"w", dtype::f32, {-1}, zero}}); })
                .find("negative"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir / "a.safetensors"));
}

// --- malformed files: every case must be one io_error naming the file and the problem ---

struct BadFile {
  const char* label;
  std::string bytes;
  const char* problem;  // substring of the message
};

std::vector<BadFile> bad_files() {
  const auto h = [](const std::string& header, std::size_t data = 16) { return file_bytes(header, data); };
  return {
      {"ShorterThan8Bytes", std::string("\x05\0\0", 3), "shorter than the 8-byte header length"},
      {"EmptyFile", std::string(), "shorter than the 8-byte header length"},
      {"HeaderLengthPastEnd", le64(1000) + "{}", "header length 1000 runs past the end of the file"},
      {"HeaderLengthHuge", le64(~uint64_t{0}) + "{}", "runs past the end of the file"},
      {"HeaderNotJson", h("{\"a\": "), "header is not valid JSON"},
      {"HeaderNotObject", h("[1, 2, 3]"), "header is an array, expected a JSON object"},
      {"EntryNotObject", h(R"({"w": 5})"), "tensor 'w': entry is an integer, expected an object"},
      {"MissingDtype", h(R"({"w": {"shape": [2], "data_offsets": [0, 8]}})"), "tensor 'w': missing 'dtype'"},
      {"DtypeNotString", h(R"({"w": {"dtype": 3, "shape": [2], "data_offsets": [0, 8]}})"), "'dtype' is an integer"},
      {"UnknownDtype", h(R"({"w": {"dtype": "F7", "shape": [2], "data_offsets": [0, 8]}})"), "unsupported dtype 'F7'"},
      {"MissingShape", h(R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})"), "tensor 'w': missing 'shape'"},
      {"ShapeNotArray", h(R"({"w": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}})"), "'shape' is an integer"},
      {"ShapeHoldsString", h(R"({"w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}})"),
       "shape holds a string"},
      {"NegativeDim", h(R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})"),
       "negative dimension -2"},
      {"MissingOffsets", h(R"({"w": {"dtype": "F32", "shape": [2]}})"), "tensor 'w': missing 'data_offsets'"},
      {"OffsetsWrongLength", h(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})"),
       "'data_offsets' is an array of 1, expected [begin, end]"},
      {"OffsetsFloat", h(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8.0]}})"),
       "'data_offsets' holds a float"},
      {"OffsetNegative", h(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})"),
       "negative data offset -8"},
      {"BeginAfterEnd", h(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})"),
       "data_offsets begin 8 > end 4"},
      {"EndPastData", h(R"({"w": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}})"),
       "data_offsets end 32 past the end of the data buffer (16 bytes)"},
      {"Overlap", h(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                    R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})"),
       "tensors 'a' [0, 8) and 'b' [4, 12) overlap"},
      {"DtypeShapeMismatch", h(R"({"w": {"dtype": "F16", "shape": [2, 4], "data_offsets": [0, 8]}})"),
       "dtype F16 and shape [2, 4] need 16 bytes but data_offsets hold 8"},
      {"ShapeOverflow",
       h(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 2], "data_offsets": [0, 8]}})"),
       "need more than 2^64 bytes"},
      {"MetadataNotStrings", h(R"({"__metadata__": {"format": 1}})"), "__metadata__ 'format' is an integer"},
  };
}

class SafetensorsBadFile : public ::testing::TestWithParam<BadFile> {};

TEST_P(SafetensorsBadFile, OneIoErrorNamingFileAndProblem) {
  const BadFile& bad = GetParam();
  TempDir dir;
  const auto path = dir / "model.safetensors";
  write_bytes(path, bad.bytes);
  const std::string msg = io_error_message([&] { SafetensorsFile f(path); });
  EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find(bad.problem), std::string::npos) << "message: " << msg << "\nexpected: " << bad.problem;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  // Through the model directory: the same error.
  EXPECT_EQ(io_error_message([&] { SafetensorsModel m(dir.path()); }), msg);
}

INSTANTIATE_TEST_SUITE_P(Cases, SafetensorsBadFile, ::testing::ValuesIn(bad_files()),
                         [](const auto& info) { return std::string(info.param.label); });

TEST(Safetensors, ZeroSizedTensorsNeverOverlap) {
  const std::string header = R"({"a": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},)"
                             R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})";
  const auto tensors = safetensors_parse_header(header, 8, "ctx");
  EXPECT_EQ(tensors.size(), 2u);
}

// --- sharded index problems ---

struct IndexFixture {
  TempDir dir;
  Tensor a = make_tensor({4}, 1), b = make_tensor({3}, 2);
  IndexFixture() {
    safetensors_write_tensors(dir / "part-1.safetensors", {{"a", &a}});
    safetensors_write_tensors(dir / "part-2.safetensors", {{"b", &b}});
  }
  std::string open_with(const std::string& index_text) {
    write_bytes(dir / "model.safetensors.index.json", index_text);
    return io_error_message([&] { SafetensorsModel m(dir.path()); });
  }
};

TEST(SafetensorsIndex, TargetFileMissing) {
  IndexFixture f;
  const std::string msg = f.open_with(R"({"weight_map": {"a": "part-1.safetensors", "b": "part-9.safetensors"}})");
  EXPECT_NE(msg.find("shard 'part-9.safetensors'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.safetensors.index.json"), std::string::npos) << msg;
}

TEST(SafetensorsIndex, TensorMissingFromItsFile) {
  IndexFixture f;
  const std::string msg = f.open_with(R"({"weight_map": {"a": "part-1.safetensors", "b": "part-1.safetensors"}})");
  EXPECT_NE(msg.find("tensor 'b' is listed in shard 'part-1.safetensors'"), std::string::npos) << msg;
  EXPECT_NE(msg.find((f.dir / "part-1.safetensors").string()), std::string::npos) << msg;
}

TEST(SafetensorsIndex, MalformedIndex) {
  IndexFixture f;
  EXPECT_NE(f.open_with("{").find("not valid JSON"), std::string::npos);
  EXPECT_NE(f.open_with(R"({"weights": {}})").find("\"weight_map\""), std::string::npos);
  EXPECT_NE(f.open_with(R"({"weight_map": {"a": "../part-1.safetensors"}})").find("must be a file name"),
            std::string::npos);
  EXPECT_NE(f.open_with(R"({"weight_map": {"a": 3}})").find("weight_map entry 'a'"), std::string::npos);
}

TEST(SafetensorsIndex, CorruptShardIsNamed) {
  IndexFixture f;
  write_bytes(f.dir / "part-2.safetensors", "xy");
  const std::string msg = f.open_with(R"({"weight_map": {"a": "part-1.safetensors", "b": "part-2.safetensors"}})");
  EXPECT_NE(msg.find((f.dir / "part-2.safetensors").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("shorter than"), std::string::npos) << msg;
}

}  // namespace
}  // namespace shardq
