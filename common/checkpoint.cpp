// Shard writer, master file and reader of the HDF5 checkpoint; see checkpoint.hpp.
#include "common/checkpoint.hpp"

#include <algorithm>
#include <cstdio>
#include <set>

#include <fmt/ranges.h>

#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "common/sha256.hpp"

namespace shardq {
namespace {

// Compression, measured with h5py on a 1024 x 4096 matrix (gzip level 4, chunked):
//   qweight, uniform random 4-bit codes      2,097,152 B -> 2,110,438 B (+0.6%, 45 ms)
//   qweight, RTN 4-bit g128 of N(0,1) weights 2,097,152 B -> 1,936,745 B (-7.7%, 68 ms = 31 MB/s)
//   qweight, RTN 2-bit / 3-bit / 8-bit        -17% / -3.2% / -3.4%
//   scales f16 [1024, 32], +shuffle            65,536 B ->    48,952 B (-25%, 3 ms)
//   zeros u8 [1024, 32] (4-bit)                32,768 B ->    14,494 B (-56%, 2 ms)
// Codes are close to maximum entropy, so qweight stays contiguous (no filter: full-speed
// reads and writes, a few percent at most to gain). The per-group side arrays compress well
// for almost no time, so scales and zeros get shuffle + gzip.
constexpr unsigned side_array_gzip_level = 4;
constexpr hsize_t side_array_chunk_elements = hsize_t{1} << 16;

h5::PropList side_array_dcpl(std::span<const hsize_t> dims) {
  h5::PropList dcpl = h5::PropList::create(H5P_DATASET_CREATE);
  const hsize_t row = std::max<hsize_t>(dims[1], 1);
  const hsize_t chunk[2] = {std::clamp<hsize_t>(side_array_chunk_elements / row, 1, std::max<hsize_t>(dims[0], 1)), row};
  dcpl.set_chunk(chunk);
  h5::check(H5Pset_shuffle(dcpl.id()), "H5Pset_shuffle", "(memory)");
  dcpl.set_deflate(side_array_gzip_level);
  return dcpl;
}

// The arrays of a QuantizedLinear must agree with its rows/cols/bits/group_size; checked on
// write (a quantizer bug must not produce a file) and on read (a foreign or damaged file).
void validate(const QuantizedLinear& q, const std::string& context) {
  auto fail = [&](const std::string& what) { throw io_error(fmt::format("{}: {}", context, what)); };
  if (q.rows <= 0 || q.cols <= 0) fail(fmt::format("bad shape [{}, {}]", q.rows, q.cols));
  if (q.bits < 1 || q.bits > 8) fail(fmt::format("bits must be in 1..8, got {}", q.bits));
  if (q.group_size == 0 || q.group_size < -1) fail(fmt::format("group_size must be positive or -1, got {}", q.group_size));
  const auto expect = [&](const char* array, size_t got, int64_t want) {
    if (static_cast<int64_t>(got) != want) fail(fmt::format("{} has {} elements, expected {}", array, got, want));
  };
  const int64_t per_group = q.rows * q.n_groups();
  expect("qweight", q.qweight.size(), q.rows * q.words_per_row());
  expect("scales", q.scales.size(), per_group);
  if (!q.zeros.empty()) expect("zeros", q.zeros.size(), per_group);
  if (!q.g_idx.empty()) {
    expect("g_idx", q.g_idx.size(), q.cols);
    for (int32_t g : q.g_idx) {
      if (g < 0 || g >= q.n_groups()) fail(fmt::format("g_idx value {} outside [0, {})", g, q.n_groups()));
    }
  }
  expect("outlier_weights", q.outlier_weights.size(), q.rows * static_cast<int64_t>(q.outlier_cols.size()));
  for (int32_t c : q.outlier_cols) {
    if (c < 0 || c >= q.cols) fail(fmt::format("outlier column {} outside [0, {})", c, q.cols));
  }
}

template <typename T>
std::span<const T> as_span(const std::vector<T>& v) {
  return {v.data(), v.size()};
}

std::vector<hsize_t> expect_dims(const h5::Dataset& ds, std::vector<hsize_t> want) {
  const std::vector<hsize_t> got = ds.dims();
  if (got != want) {
    throw io_error(fmt::format("'{}' object '{}': shape {} does not match the attributes (expected {})", ds.file(),
                               ds.path(), fmt::join(got, "x"), fmt::join(want, "x")));
  }
  return got;
}

}  // namespace

std::string checkpoint_shard_name(int index) { return fmt::format("shard-{:05d}.h5", index); }

// --- ShardWriter --------------------------------------------------------------------------

ShardWriter::ShardWriter(std::filesystem::path path)
    : path_(std::move(path)), tmp_path_(temp_path_fresh(path_)), file_(h5::File::create(tmp_path_)) {}

ShardWriter::~ShardWriter() {
  if (closed_) return;
  file_.reset();
  std::error_code ec;
  std::filesystem::remove(tmp_path_, ec);
}

void ShardWriter::check_new_name(const std::string& name) {
  if (closed_) throw io_error(fmt::format("'{}': tensor '{}' written after close()", path_.string(), name));
  if (name.empty() || name.find('/') != std::string::npos)
    throw io_error(fmt::format("'{}': invalid tensor name '{}'", path_.string(), name));
  if (file_.has_link(name)) throw io_error(fmt::format("'{}': tensor '{}' written twice", path_.string(), name));
}

void ShardWriter::write_quantized(const std::string& name, const QuantizedLinear& q) {
  check_new_name(name);
  validate(q, fmt::format("quantized linear '{}' for '{}'", name, path_.string()));
  const auto rows = static_cast<hsize_t>(q.rows), cols = static_cast<hsize_t>(q.cols);
  const auto n_groups = static_cast<hsize_t>(q.n_groups());
  h5::Group g = file_.create_group(name);

  const hsize_t qweight_dims[2] = {rows, static_cast<hsize_t>(q.words_per_row())};
  g.write_dataset(std::string("qweight"), as_span(q.qweight), qweight_dims, H5T_STD_U32LE);

  const hsize_t group_dims[2] = {rows, n_groups};
  const h5::PropList dcpl = side_array_dcpl(group_dims);
  const h5::Datatype f16 = h5::Datatype::ieee_f16();
  g.create_dataset("scales", f16, group_dims, &dcpl).write_f16_bits(q.scales);
  if (!q.zeros.empty()) g.write_dataset(std::string("zeros"), as_span(q.zeros), group_dims, H5T_STD_U8LE, &dcpl);
  if (!q.g_idx.empty()) {
    const hsize_t dims[1] = {cols};
    g.write_dataset(std::string("g_idx"), as_span(q.g_idx), dims, H5T_STD_I32LE);
  }
  if (!q.outlier_cols.empty()) {
    const hsize_t n = q.outlier_cols.size();
    const hsize_t col_dims[1] = {n};
    g.write_dataset(std::string("outlier_cols"), as_span(q.outlier_cols), col_dims, H5T_STD_I32LE);
    const hsize_t weight_dims[2] = {rows, n};
    g.create_dataset("outlier_weights", f16, weight_dims)
        .write_f16_bits(q.outlier_weights);
  }
  g.write_attribute("bits", int64_t{q.bits});
  g.write_attribute("group_size", int64_t{q.group_size});
  g.write_attribute("sym", int64_t{q.sym ? 1 : 0});
  g.write_attribute("method", quant_method_string(q.method));
  g.write_attribute("shape", std::vector<int64_t>{q.rows, q.cols});
  names_.push_back(name);
}

void ShardWriter::write_float(const std::string& name, const Tensor& t, dtype store) {
  check_new_name(name);
  if (static_cast<int64_t>(t.data.size()) != Tensor::numel_of(t.shape))
    throw io_error(fmt::format("'{}': tensor '{}' has {} values for shape {}", path_.string(), name, t.data.size(),
                               shape_string(t.shape)));
  std::vector<hsize_t> dims(t.shape.begin(), t.shape.end());
  if (store == dtype::f32) {
    file_.write_dataset(name, as_span(t.data), dims, H5T_IEEE_F32LE);
  } else if (store == dtype::f16) {
    std::vector<uint16_t> half(t.data.size());
    std::transform(t.data.begin(), t.data.end(), half.begin(), fp32_to_fp16);
    file_.create_dataset(name, h5::Datatype::ieee_f16(), dims).write_f16_bits(half);
  } else {
    throw io_error(fmt::format("'{}': tensor '{}': float tensors are stored as F16 or F32, not {}", path_.string(), name,
                               dtype_name(store)));
  }
  names_.push_back(name);
}

void ShardWriter::close() {
  if (closed_) return;
  close_unpublished();
  try {
    publish_file(tmp_path_, path_);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp_path_, ec);
    throw;
  }
}

void ShardWriter::close_unpublished() {
  if (closed_) return;
  file_.flush();
  file_.close();
  closed_ = true;
}

// --- master file --------------------------------------------------------------------------

void checkpoint_write_master(const std::filesystem::path& dir, const std::vector<std::string>& shard_files,
                             const std::string& manifest_json) {
  const std::filesystem::path final_path = dir / checkpoint_master_name;
  const std::filesystem::path tmp = temp_path_fresh(final_path);
  try {
    h5::File master = h5::File::create(tmp);
    std::set<std::string> seen;
    for (const std::string& shard : shard_files) {
      std::vector<std::string> names;
      {
        h5::File f = h5::File::open_read(dir / shard);
        names = f.link_names();
      }
      for (const std::string& name : names) {
        if (!seen.insert(name).second)
          throw io_error(fmt::format("'{}': tensor '{}' appears in more than one shard", (dir / shard).string(), name));
        master.create_external_link(name, shard, "/" + name);
      }
    }
    master.write_attribute(checkpoint_manifest_attribute, manifest_json);
    master.flush();
    master.close();
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
  publish_file(tmp, final_path);
}

void checkpoint_finalize(const std::filesystem::path& dir, Manifest& manifest) {
  std::vector<std::string> files;
  std::vector<std::filesystem::path> paths;
  for (const ManifestShard& s : manifest.shards) paths.push_back(dir / s.file);
  const std::vector<std::string> digests = sha256_files(paths);
  for (size_t i = 0; i < manifest.shards.size(); ++i) {
    ManifestShard& s = manifest.shards[i];
    const std::string& digest = digests[i];
    if (!s.sha256.empty() && s.sha256 != digest)
      throw io_error(fmt::format("'{}' changed after it was committed (sha256 {} != recorded {}); resume the job to redo it",
                                 (dir / s.file).string(), digest.substr(0, 16), s.sha256.substr(0, 16)));
    s.sha256 = digest;
    files.push_back(s.file);
  }
  checkpoint_write_master(dir, files, manifest_to_json(manifest).dump());
  manifest_write(dir, manifest);
}

// --- CheckpointReader ---------------------------------------------------------------------

CheckpointReader::CheckpointReader(const std::filesystem::path& path)
    : master_path_(std::filesystem::is_directory(path) ? path / checkpoint_master_name : path) {
  if (!std::filesystem::exists(master_path_)) {
    throw io_error(std::filesystem::is_directory(path)
                       ? fmt::format("'{}' is not a shardq checkpoint: no {}", path.string(), checkpoint_master_name)
                       : fmt::format("checkpoint '{}' does not exist", master_path_.string()));
  }
  file_ = h5::File::open_read(master_path_);
}

std::vector<std::string> CheckpointReader::tensor_names() const { return file_.link_names(); }

bool CheckpointReader::contains(const std::string& name) const {
  return !name.empty() && name.find('/') == std::string::npos && file_.has_link(name);
}

bool CheckpointReader::is_quantized(const std::string& name) const {
  if (!contains(name)) throw io_error(fmt::format("'{}': no tensor '{}'", master_path_.string(), name));
  return file_.object_type(name) == H5O_TYPE_GROUP;
}

QuantizedLinear CheckpointReader::read_quantized(const std::string& name) const {
  if (!is_quantized(name)) throw io_error(fmt::format("'{}': tensor '{}' is not a quantized linear", master_path_.string(), name));
  const h5::Group g = file_.open_group(name);
  QuantizedLinear q;
  q.method = quant_method_parse(g.read_attribute_string("method"), fmt::format("'{}' tensor '{}'", master_path_.string(), name));
  q.bits = static_cast<int>(g.read_attribute_int("bits"));
  q.group_size = static_cast<int>(g.read_attribute_int("group_size"));
  q.sym = g.read_attribute_int("sym") != 0;
  const std::vector<int64_t> shape = g.read_attribute_ints("shape");
  if (shape.size() != 2) throw io_error(fmt::format("'{}' tensor '{}': attribute shape must have 2 values", master_path_.string(), name));
  q.rows = shape[0];
  q.cols = shape[1];
  const std::string context = fmt::format("'{}' tensor '{}'", master_path_.string(), name);
  if (q.rows <= 0 || q.cols <= 0 || q.bits < 1 || q.bits > 8 || q.group_size == 0 || q.group_size < -1)
    throw io_error(fmt::format("{}: bad attributes (shape [{}, {}], bits {}, group_size {})", context, q.rows, q.cols, q.bits, q.group_size));
  const auto rows = static_cast<hsize_t>(q.rows), n_groups = static_cast<hsize_t>(q.n_groups());

  const h5::Dataset qweight = g.open_dataset("qweight");
  expect_dims(qweight, {rows, static_cast<hsize_t>(q.words_per_row())});
  q.qweight = qweight.read<uint32_t>();
  const h5::Dataset scales = g.open_dataset("scales");
  expect_dims(scales, {rows, n_groups});
  q.scales = scales.read_f16_bits();
  if (g.has_link("zeros")) {
    const h5::Dataset zeros = g.open_dataset("zeros");
    expect_dims(zeros, {rows, n_groups});
    q.zeros = zeros.read<uint8_t>();
  }
  if (g.has_link("g_idx")) {
    const h5::Dataset g_idx = g.open_dataset("g_idx");
    expect_dims(g_idx, {static_cast<hsize_t>(q.cols)});
    q.g_idx = g_idx.read<int32_t>();
  }
  if (g.has_link("outlier_cols")) {
    q.outlier_cols = g.open_dataset("outlier_cols").read<int32_t>();
    const h5::Dataset weights = g.open_dataset("outlier_weights");
    expect_dims(weights, {rows, static_cast<hsize_t>(q.outlier_cols.size())});
    q.outlier_weights = weights.read_f16_bits();
  }
  validate(q, context);
  return q;
}

dtype CheckpointReader::float_dtype(const std::string& name) const {
  if (is_quantized(name)) throw io_error(fmt::format("'{}': tensor '{}' is quantized, not a float tensor", master_path_.string(), name));
  const h5::Datatype type = file_.open_dataset(name).file_type();
  if (type.type_class() == H5T_FLOAT && type.size() == 2) return dtype::f16;
  if (type.type_class() == H5T_FLOAT && type.size() == 4) return dtype::f32;
  throw io_error(fmt::format("'{}': tensor '{}' is neither float16 nor float32", master_path_.string(), name));
}

Tensor CheckpointReader::read_float(const std::string& name) const {
  const dtype stored = float_dtype(name);
  const h5::Dataset ds = file_.open_dataset(name);
  const std::vector<hsize_t> dims = ds.dims();
  Tensor t(std::vector<int64_t>(dims.begin(), dims.end()));
  if (stored == dtype::f32) {
    ds.read_raw(H5T_NATIVE_FLOAT, t.data.data(), t.data.size());
  } else {
    const std::vector<uint16_t> half = ds.read_f16_bits();
    std::transform(half.begin(), half.end(), t.data.begin(), fp16_to_fp32);
  }
  return t;
}

std::string CheckpointReader::manifest_json() const {
  return file_.read_attribute_string(checkpoint_manifest_attribute);
}

}  // namespace shardq
