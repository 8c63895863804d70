// HDF5 wrappers: the float16 file type is IEEE binary16 by HDF5's own conversion, attributes
// round-trip, errors name the call/file/object and HDF5 prints nothing itself, external
// links resolve relative to the linking file.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <functional>
#include <cstdio>
#include <fstream>

#include "common/dtype.hpp"
#include "common/error.hpp"
#include "common/hdf5.hpp"
#include "support/test_support.hpp"

namespace shardq {
namespace {

using test::TempDir;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const io_error& e) {
    return e.what();
  }
  return "";
}

// fp16 patterns written raw with Datatype::ieee_f16 and read back through HDF5's float
// conversion must decode as IEEE binary16 does (dtype.hpp's fp16_to_fp32, itself tested
// against the definition in test_dtype.cpp).
TEST(Hdf5, Float16TypeIsIeeeBinary16) {
  TempDir dir;
  std::vector<uint16_t> patterns(65536);
  for (uint32_t i = 0; i < patterns.size(); ++i) patterns[i] = static_cast<uint16_t>(i);
  {
    h5::File f = h5::File::create(dir / "f16.h5");
    const hsize_t dims[1] = {patterns.size()};
    f.create_dataset("x", h5::Datatype::ieee_f16(), dims).write_f16_bits(patterns);
    f.close();
  }
  h5::File f = h5::File::open_read(dir / "f16.h5");
  const h5::Dataset ds = f.open_dataset("x");
  EXPECT_EQ(ds.file_type().type_class(), H5T_FLOAT);
  EXPECT_EQ(ds.file_type().size(), 2u);
  const std::vector<float> values = ds.read<float>();
  int mismatches = 0;
  for (uint32_t i = 0; i < patterns.size(); ++i) {
    const float want = fp16_to_fp32(patterns[i]);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(values[i])) << i;
    } else if (values[i] != want && ++mismatches < 5) {
      ADD_FAILURE() << "pattern 0x" << std::hex << i << ": HDF5 gives " << values[i] << ", IEEE " << want;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(Hdf5, AttributesRoundTrip) {
  TempDir dir;
  const std::string big(200000, 'x');  // larger than the 64 KiB compact-attribute limit
  {
    h5::File f = h5::File::create(dir / "a.h5");
    h5::Group g = f.create_group("model.layers.0.self_attn.q_proj");
    g.write_attribute("bits", int64_t{3});
    g.write_attribute("shape", std::vector<int64_t>{4096, 11008});
    g.write_attribute("one", std::vector<int64_t>{7});
    g.write_attribute("method", std::string("gptq – ü"));
    f.write_attribute("manifest", big);
    f.write_attribute("manifest", big + "y");  // rewriting replaces
    g.reset();
    f.close();
  }
  h5::File f = h5::File::open_read(dir / "a.h5");
  const h5::Group g = f.open_group("model.layers.0.self_attn.q_proj");
  EXPECT_EQ(g.read_attribute_int("bits"), 3);
  EXPECT_EQ(g.read_attribute_ints("shape"), (std::vector<int64_t>{4096, 11008}));
  EXPECT_EQ(g.read_attribute_ints("one"), (std::vector<int64_t>{7}));
  EXPECT_EQ(g.read_attribute_string("method"), "gptq – ü");
  EXPECT_EQ(f.read_attribute_string("manifest"), big + "y");
  EXPECT_TRUE(g.has_attribute("bits"));
  EXPECT_FALSE(g.has_attribute("nope"));
  EXPECT_NE(error_of([&] { g.read_attribute_int("shape"); }).find("2 values"), std::string::npos);
  EXPECT_NE(error_of([&] { g.read_attribute_string("bits"); }).find("not a string"), std::string::npos);
}

TEST(Hdf5, ErrorsNameCallFileAndObject) {
  TempDir dir;
  const std::string missing = (dir / "missing.h5").string();
  std::string e = error_of([&] { h5::File::open_read(missing); });
  EXPECT_NE(e.find("H5Fopen"), std::string::npos) << e;
  EXPECT_NE(e.find(missing), std::string::npos) << e;

  {
    h5::File f = h5::File::create(dir / "x.h5");
    f.create_group("g");
    f.close();
  }
  h5::File f = h5::File::open_read(dir / "x.h5");
  e = error_of([&] { f.open_group("g").open_dataset("qweight"); });
  EXPECT_NE(e.find("H5Dopen2"), std::string::npos) << e;
  EXPECT_NE(e.find((dir / "x.h5").string()), std::string::npos) << e;
  EXPECT_NE(e.find("'/g/qweight'"), std::string::npos) << e;
  // Writing to a read-only file fails cleanly, too.
  e = error_of([&] { f.create_group("new"); });
  EXPECT_NE(e.find("H5Gcreate2"), std::string::npos) << e;

  std::ofstream(dir / "junk.h5") << "not an HDF5 file";
  e = error_of([&] { h5::File::open_read(dir / "junk.h5"); });
  EXPECT_NE(e.find((dir / "junk.h5").string()), std::string::npos) << e;
  EXPECT_NE(e.find("signature"), std::string::npos) << e;
}

// HDF5 must not print its error stack (the user gets our one line only).
TEST(Hdf5, PrintsNothingOnError) {
  TempDir dir;
  std::fflush(stderr);
  const int saved = ::dup(2);
  const std::string capture = (dir / "stderr.txt").string();
  std::FILE* out = std::fopen(capture.c_str(), "w");
  ASSERT_NE(out, nullptr);
  ::dup2(::fileno(out), 2);
  const std::string e = error_of([&] { h5::File::open_read(dir / "missing.h5"); });
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  std::fclose(out);
  EXPECT_FALSE(e.empty());
  EXPECT_EQ(test::read_text(capture), "");
}

TEST(Hdf5, ExternalLinkSurvivesMovingTheDirectory) {
  TempDir dir;
  const auto a = dir / "a";
  std::filesystem::create_directory(a);
  const std::vector<int32_t> values = {1, -2, 3, 2147483647};
  {
    h5::File t = h5::File::create(a / "target.h5");
    const hsize_t dims[1] = {values.size()};
    t.write_dataset(std::string("g_idx"), std::span<const int32_t>(values), dims);
    t.close();
    h5::File m = h5::File::create(a / "master.h5");
    m.create_external_link("model.layers.0.x", "target.h5", "/g_idx");
    m.close();
  }
  std::filesystem::rename(a, dir / "b");
  h5::File m = h5::File::open_read(dir / "b" / "master.h5");
  EXPECT_EQ(m.link_names(), std::vector<std::string>{"model.layers.0.x"});
  EXPECT_EQ(m.object_type("model.layers.0.x"), H5O_TYPE_DATASET);
  EXPECT_EQ(m.open_dataset("model.layers.0.x").read<int32_t>(), values);
}

TEST(Hdf5, MovedHandleIsClosedOnce) {
  TempDir dir;
  h5::File a = h5::File::create(dir / "m.h5");
  h5::File b = std::move(a);
  EXPECT_FALSE(a.valid());
  EXPECT_TRUE(b.valid());
  b.create_group("g");
  b.close();
  EXPECT_FALSE(b.valid());
  EXPECT_NO_THROW(h5::File::open_read(dir / "m.h5"));
}

}  // namespace
}  // namespace shardq
