// manifest.json <-> C++ structs; see manifest.hpp for what the bit averages count.
#include "common/manifest.hpp"

#include <cmath>
#include <limits>

#include "common/atomic_file.hpp"
#include "common/checkpoint_journal.hpp"
#include "common/error.hpp"
#include "common/json_text.hpp"

namespace shardq {

using nlohmann::json;

int64_t ManifestModule::params() const {
  int64_t n = shape.empty() ? 0 : 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string quant_method_string(quant_method m) { return quant_method_name(m); }

quant_method quant_method_parse(const std::string& name, const std::string& context) {
  if (auto m = quant_method_from_name(name)) return *m;
  throw io_error(fmt::format("{}: unknown quantization method \"{}\" (expected gptq, rtn, nf4 or int8)", context, name));
}

ManifestModule manifest_module(const std::string& name, int layer, const QuantizedLinear& q, double rel_error) {
  ManifestModule m;
  m.name = name;
  m.layer = layer;
  m.shape = {q.rows, q.cols};
  m.bits = q.bits;
  m.method = quant_method_string(q.method);
  m.group_size = q.group_size;
  m.sym = q.sym;
  m.zeros = !q.zeros.empty() && !q.sym;
  m.act_order = !q.g_idx.empty();
  m.outliers = static_cast<int64_t>(q.outlier_cols.size());
  m.bytes = static_cast<int64_t>(q.qweight.size() * 4 + q.scales.size() * 2 + q.zeros.size() + q.g_idx.size() * 4 +
                                 q.outlier_cols.size() * 4 + q.outlier_weights.size() * 2);
  m.rel_error = rel_error;
  return m;
}

ManifestModule manifest_module_kept(const std::string& name, int layer, int64_t rows, int64_t cols, int store_bytes) {
  ManifestModule m;
  m.name = name;
  m.layer = layer;
  m.shape = {rows, cols};
  m.bits = 16;
  m.method = store_bytes == 4 ? "fp32" : "fp16";
  m.group_size = -1;
  m.bytes = rows * cols * store_bytes;
  m.rel_error = 0.0;
  return m;
}

int64_t manifest_overhead_bits(const ManifestModule& m) {
  if (m.bits >= 16 || m.shape.size() != 2) return 0;
  const int64_t rows = m.shape[0], cols = m.shape[1];
  const int64_t group = m.group_size <= 0 ? cols : m.group_size;
  const int64_t n_groups = (cols + group - 1) / group;
  int64_t bits = 16 * rows * n_groups;
  if (m.zeros) bits += int64_t{m.bits} * rows * n_groups;
  if (m.act_order) bits += 32 * cols;
  bits += (16 * rows + 32) * m.outliers;
  return bits;
}

ManifestBits manifest_bits(const std::vector<ManifestModule>& modules) {
  // Integer sums: exact for any model size (a 70B model has < 2^37 weights, < 2^42 bits).
  int64_t params = 0, code_bits = 0, overhead = 0;
  ManifestBits out;
  for (const ManifestModule& m : modules) {
    const int64_t p = m.params();
    params += p;
    code_bits += p * std::min(m.bits, 16);
    overhead += manifest_overhead_bits(m);
    if (m.bits < 16) out.quantized_params += p;
  }
  if (params > 0) {
    out.avg_bits = static_cast<double>(code_bits) / static_cast<double>(params);
    out.avg_bits_effective = static_cast<double>(code_bits + overhead) / static_cast<double>(params);
  }
  return out;
}

// --- JSON ---------------------------------------------------------------------------------

namespace {

// NaN / inf (an error never measured) are written as JSON null and read back as NaN.
json number(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

class Reader {
 public:
  explicit Reader(const std::string& source) : source_(source) {}

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw io_error(fmt::format("{}: {}: {}", source_, field, what));
  }
  const json& need(const json& j, const std::string& key, const std::string& field) const {
    if (!j.is_object()) fail(field, "expected an object");
    auto it = j.find(key);
    if (it == j.end()) fail(field + "." + key, "missing");
    return *it;
  }
  std::string str(const json& j, const std::string& key, const std::string& field) const {
    const json& v = need(j, key, field);
    if (!v.is_string()) fail(field + "." + key, "expected a string");
    return v.get<std::string>();
  }
  int64_t integer(const json& j, const std::string& key, const std::string& field) const {
    const json& v = need(j, key, field);
    if (!v.is_number_integer()) fail(field + "." + key, "expected an integer");
    return v.get<int64_t>();
  }
  double real(const json& j, const std::string& key, const std::string& field) const {
    const json& v = need(j, key, field);
    if (v.is_null()) return std::numeric_limits<double>::quiet_NaN();
    if (!v.is_number()) fail(field + "." + key, "expected a number");
    return v.get<double>();
  }
  bool boolean_or(const json& j, const std::string& key, bool fallback, const std::string& field) const {
    auto it = j.find(key);
    if (it == j.end()) return fallback;
    if (!it->is_boolean()) fail(field + "." + key, "expected true or false");
    return it->get<bool>();
  }
  const json& array(const json& j, const std::string& key, const std::string& field) const {
    const json& v = need(j, key, field);
    if (!v.is_array()) fail(field + "." + key, "expected an array");
    return v;
  }
  std::map<std::string, double> number_map(const json& j, const std::string& key, const std::string& field) const {
    const json& v = need(j, key, field);
    if (!v.is_object()) fail(field + "." + key, "expected an object");
    std::map<std::string, double> out;
    for (auto it = v.begin(); it != v.end(); ++it) out[it.key()] = real(v, it.key(), field + "." + key);
    return out;
  }

 private:
  const std::string& source_;
};

json number_map_json(const std::map<std::string, double>& m) {
  json j = json::object();
  for (const auto& [k, v] : m) j[k] = number(v);
  return j;
}

}  // namespace

json manifest_to_json(const Manifest& m) {
  json files = json::array();
  for (const ManifestFile& f : m.model.files) files.push_back({{"name", f.name}, {"sha256", f.sha256}});
  json layers = json::array();
  for (const ManifestLayer& l : m.layers) {
    layers.push_back({{"index", l.index}, {"shard", l.shard}, {"lim", number(l.lim)}, {"zd", number(l.zd)},
                      {"sensitivity", number_map_json(l.sensitivity)}});
  }
  json modules = json::array();
  for (const ManifestModule& x : m.modules) {
    modules.push_back({{"name", x.name}, {"layer", x.layer}, {"shape", x.shape}, {"bits", x.bits},
                       {"method", x.method}, {"group_size", x.group_size}, {"sym", x.sym}, {"zeros", x.zeros},
                       {"act_order", x.act_order}, {"outliers", x.outliers}, {"bytes", x.bytes},
                       {"rel_error", number(x.rel_error)}});
  }
  json shards = json::array();
  for (const ManifestShard& s : m.shards) shards.push_back({{"file", s.file}, {"sha256", s.sha256}, {"layers", s.layers}});
  const ManifestSummary& s = m.summary;
  return {{"format", m.format},
          {"version", m.version},
          {"model", {{"path", m.model.path}, {"architecture", m.model.architecture}, {"config", m.model.config}, {"files", files}}},
          {"spec", m.spec},
          {"summary", {{"avg_bits", number(s.avg_bits)}, {"avg_bits_effective", number(s.avg_bits_effective)},
                       {"quantized_params", s.quantized_params}, {"bytes", s.bytes}, {"original_bytes", s.original_bytes},
                       {"compression", number(s.compression)}, {"phase_seconds", number_map_json(s.phase_seconds)}}},
          {"layers", layers},
          {"modules", modules},
          {"shards", shards},
          {"ranks", m.ranks},
          {"run", m.run}};
}

Manifest manifest_from_json(const json& j, const std::string& source) {
  const Reader r(source);
  Manifest m;
  if (!j.is_object()) r.fail("manifest", "expected a JSON object");
  m.format = r.str(j, "format", "manifest");
  if (m.format != manifest_format) r.fail("format", fmt::format("expected \"{}\", got \"{}\"", manifest_format, m.format));
  m.version = static_cast<int>(r.integer(j, "version", "manifest"));
  if (m.version != manifest_version) r.fail("version", fmt::format("unsupported version {} (this build reads {})", m.version, manifest_version));

  const json& model = r.need(j, "model", "manifest");
  m.model.path = r.str(model, "path", "model");
  m.model.architecture = r.str(model, "architecture", "model");
  m.model.config = r.need(model, "config", "model");
  const json& files = r.array(model, "files", "model");
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string field = fmt::format("model.files[{}]", i);
    m.model.files.push_back({r.str(files[i], "name", field), r.str(files[i], "sha256", field)});
  }
  m.spec = r.need(j, "spec", "manifest");

  const json& s = r.need(j, "summary", "manifest");
  m.summary.avg_bits = r.real(s, "avg_bits", "summary");
  m.summary.avg_bits_effective = r.real(s, "avg_bits_effective", "summary");
  m.summary.quantized_params = r.integer(s, "quantized_params", "summary");
  m.summary.bytes = r.integer(s, "bytes", "summary");
  m.summary.original_bytes = r.integer(s, "original_bytes", "summary");
  m.summary.compression = r.real(s, "compression", "summary");
  m.summary.phase_seconds = r.number_map(s, "phase_seconds", "summary");

  const json& layers = r.array(j, "layers", "manifest");
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string field = fmt::format("layers[{}]", i);
    ManifestLayer l;
    l.index = static_cast<int>(r.integer(layers[i], "index", field));
    l.shard = static_cast<int>(r.integer(layers[i], "shard", field));
    l.lim = r.real(layers[i], "lim", field);
    l.zd = r.real(layers[i], "zd", field);
    l.sensitivity = r.number_map(layers[i], "sensitivity", field);
    m.layers.push_back(std::move(l));
  }

  const json& modules = r.array(j, "modules", "manifest");
  for (size_t i = 0; i < modules.size(); ++i) {
    const json& x = modules[i];
    const std::string field = fmt::format("modules[{}]", i);
    ManifestModule mod;
    mod.name = r.str(x, "name", field);
    mod.layer = static_cast<int>(r.integer(x, "layer", field));
    const json& shape = r.array(x, "shape", field);
    for (const json& d : shape) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) r.fail(field + ".shape", "expected non-negative integers");
      mod.shape.push_back(d.get<int64_t>());
    }
    mod.bits = static_cast<int>(r.integer(x, "bits", field));
    mod.method = r.str(x, "method", field);
    mod.group_size = static_cast<int>(r.integer(x, "group_size", field));
    mod.sym = r.boolean_or(x, "sym", false, field);
    mod.zeros = r.boolean_or(x, "zeros", false, field);
    mod.act_order = r.boolean_or(x, "act_order", false, field);
    mod.outliers = x.contains("outliers") ? r.integer(x, "outliers", field) : 0;
    mod.bytes = r.integer(x, "bytes", field);
    mod.rel_error = r.real(x, "rel_error", field);
    m.modules.push_back(std::move(mod));
  }

  const json& shards = r.array(j, "shards", "manifest");
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string field = fmt::format("shards[{}]", i);
    ManifestShard sh;
    sh.file = r.str(shards[i], "file", field);
    sh.sha256 = r.str(shards[i], "sha256", field);
    for (const json& l : r.array(shards[i], "layers", field)) {
      if (!l.is_number_integer()) r.fail(field + ".layers", "expected integers");
      sh.layers.push_back(l.get<int>());
    }
    m.shards.push_back(std::move(sh));
  }
  if (auto it = j.find("ranks"); it != j.end() && it->is_array()) m.ranks = *it;
  if (auto it = j.find("run"); it != j.end() && it->is_object()) m.run = *it;
  return m;
}

void manifest_write(const std::filesystem::path& dir, const Manifest& m) {
  write_file_atomic(dir / manifest_file_name, manifest_to_json(m).dump(2) + "\n");
}

nlohmann::json manifest_read_json(const std::filesystem::path& path, std::string* source) {
  const bool is_dir = std::filesystem::is_directory(path);
  const std::filesystem::path file = is_dir ? path / manifest_file_name : path;
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) {
    if (is_dir && journal_exists(path))
      throw io_error(fmt::format("'{}' is an unfinished shardq checkpoint (a journal, no {}): `shardq inspect --verify` "
                                 "lists its committed layers, `shardq quantize ... --resume` finishes it",
                                 path.string(), manifest_file_name));
    if (is_dir) throw io_error(fmt::format("'{}' is not a complete shardq checkpoint: no {}", path.string(), manifest_file_name));
    throw io_error(fmt::format("manifest '{}' does not exist", file.string()));
  }
  if (source) *source = "'" + file.string() + "'";
  return json_file_read(file, fmt::format("manifest '{}'", file.string()));
}

Manifest manifest_read(const std::filesystem::path& path) {
  std::string source;
  const json j = manifest_read_json(path, &source);
  return manifest_from_json(j, source);
}

}  // namespace shardq
