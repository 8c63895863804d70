#include "common/job_spec.hpp"

#include <algorithm>
#include <limits>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/error.hpp"
#include "common/json_text.hpp"
#include "common/output_lock.hpp"

namespace shardq {
namespace {

using nlohmann::json;

// Reads the keys of one JSON object strictly: every key must be consumed by a get(), and
// what is left over is reported as an unknown field.
class ObjectReader {
 public:
  ObjectReader(const json& j, std::string prefix) : j_(j), prefix_(std::move(prefix)) {
    if (!j_.is_object()) throw spec_error(prefix_.empty() ? "spec" : prefix_, "must be a JSON object");
  }

  std::string field(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }

  const json* find(const std::string& key) {
    seen_.insert(key);
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }

  template <typename T>
  void get(const std::string& key, T& out) {
    const json* v = find(key);
    if (!v) return;
    out = convert<T>(*v, field(key));
  }

  template <typename T>
  static T convert(const json& v, const std::string& field) {
    if constexpr (std::is_same_v<T, bool>) {
      if (!v.is_boolean()) throw spec_error(field, fmt::format("must be true or false, got {}", json_shown(v)));
      return v.get<bool>();
    } else if constexpr (std::is_integral_v<T>) {
      if (!v.is_number_integer()) throw spec_error(field, fmt::format("must be an integer, got {}", json_shown(v)));
      // nlohmann keeps every non-negative integer as uint64_t: check against T's range both
      // ways, or 4294967300 would become bits 4.
      if (v.is_number_unsigned()) {
        const uint64_t x = v.get<uint64_t>();
        if (x > static_cast<uint64_t>(std::numeric_limits<T>::max()))
          throw spec_error(field, fmt::format("out of range: {} (at most {})", x, std::numeric_limits<T>::max()));
        return static_cast<T>(x);
      }
      const int64_t x = v.get<int64_t>();
      if constexpr (std::is_unsigned_v<T>) {
        if (x < 0) throw spec_error(field, fmt::format("must not be negative, got {}", x));
      } else {
        if (x < static_cast<int64_t>(std::numeric_limits<T>::min()))
          throw spec_error(field, fmt::format("out of range: {} (at least {})", x, std::numeric_limits<T>::min()));
      }
      return static_cast<T>(x);
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!v.is_number()) throw spec_error(field, fmt::format("must be a number, got {}", json_shown(v)));
      return v.get<T>();
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!v.is_string()) throw spec_error(field, fmt::format("must be a string, got {}", json_shown(v)));
      return v.get<std::string>();
    } else {
      static_assert(sizeof(T) == 0, "unsupported type");
    }
  }

  void finish() const {
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      if (!seen_.count(it.key())) throw spec_error(field(it.key()), "unknown field");
    }
  }

 private:
  const json& j_;
  std::string prefix_;
  std::set<std::string> seen_;
};

void check_one_of(const std::string& field, const std::string& value, std::initializer_list<const char*> allowed) {
  for (const char* a : allowed) {
    if (value == a) return;
  }
  throw spec_error(field, fmt::format("must be one of {}, got '{}'", fmt::join(allowed, ", "), value));
}

}  // namespace

quant_method parse_quant_method(const std::string& field, const std::string& name) {
  if (auto m = quant_method_from_name(name)) return *m;
  throw spec_error(field, fmt::format("must be one of gptq, rtn, nf4, int8, got '{}'", name));
}

QuantConfig quant_config_for_method(const QuantConfig& base, quant_method m) {
  QuantConfig q = base;
  q.method = m;
  if (m == quant_method::nf4) q.bits = 4, q.group_size = 64, q.sym = true;
  if (m == quant_method::int8) q.bits = 8, q.group_size = -1, q.sym = true;
  return q;
}

namespace {

void check_bits_for_method(const std::string& field, quant_method m, int bits) {
  switch (m) {
    case quant_method::gptq:
    case quant_method::rtn:
      if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
        throw spec_error(field, fmt::format("must be one of 2, 3, 4, 8 for {}, got {}", quant_method_name(m), bits));
      return;
    case quant_method::nf4:
      if (bits != 4) throw spec_error(field, fmt::format("must be 4 for nf4, got {}", bits));
      return;
    case quant_method::int8:
      if (bits != 8) throw spec_error(field, fmt::format("must be 8 for int8, got {}", bits));
      return;
  }
}

void check_group_size(const std::string& field, int g) {
  if (g == -1 || (g >= 1 && g <= (1 << 20))) return;
  throw spec_error(field, fmt::format("must be -1 (one group per row) or a positive number of columns, got {}", g));
}

std::vector<std::string> string_list(const json& v, const std::string& field) {
  std::vector<std::string> out;
  if (v.is_string()) {  // "attn,mlp" as a flag would write it
    std::string s = v.get<std::string>();
    size_t pos = 0;
    while (pos <= s.size()) {
      size_t comma = s.find(',', pos);
      if (comma == std::string::npos) comma = s.size();
      if (comma > pos) out.push_back(s.substr(pos, comma - pos));
      pos = comma + 1;
    }
    return out;
  }
  if (!v.is_array()) throw spec_error(field, "must be a list");
  for (size_t i = 0; i < v.size(); ++i) out.push_back(ObjectReader::convert<std::string>(v[i], fmt::format("{}[{}]", field, i)));
  return out;
}

std::vector<int> int_list(const json& v, const std::string& field) {
  std::vector<int> out;
  if (v.is_string()) {
    for (const auto& s : string_list(v, field)) {
      try {
        size_t used = 0;
        out.push_back(std::stoi(s, &used));
        if (used != s.size()) throw std::invalid_argument(s);
      } catch (const std::exception&) {
        throw spec_error(field, fmt::format("'{}' is not an integer", s));
      }
    }
    return out;
  }
  if (!v.is_array()) throw spec_error(field, "must be a list of integers");
  for (size_t i = 0; i < v.size(); ++i) out.push_back(ObjectReader::convert<int>(v[i], fmt::format("{}[{}]", field, i)));
  return out;
}

}  // namespace

bool glob_match(std::string_view p, std::string_view t) {
  // Iterative wildcard match with single-star backtracking: O(|p|·|t|) worst case.
  size_t pi = 0, ti = 0, star = std::string_view::npos, mark = 0;
  while (ti < t.size()) {
    if (pi < p.size() && (p[pi] == '?' || p[pi] == t[ti])) {
      ++pi;
      ++ti;
    } else if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = ti;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      ti = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

std::vector<int> parse_layer_ranges(const std::string& text, const std::string& field, int n_layers) {
  std::set<int> layers;
  size_t pos = 0;
  auto number = [&](const std::string& s) {
    if (s.empty() || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }) || s.size() > 9)
      throw spec_error(field, fmt::format("'{}' is not a layer range like \"16-31\" or \"0-3,40-47\"", text));
    return std::stoi(s);
  };
  while (pos < text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    std::string part = text.substr(pos, comma - pos);
    part.erase(std::remove(part.begin(), part.end(), ' '), part.end());
    const size_t dash = part.find('-');
    const int lo = number(dash == std::string::npos ? part : part.substr(0, dash));
    const int hi = dash == std::string::npos ? lo : number(part.substr(dash + 1));
    if (hi < lo) throw spec_error(field, fmt::format("range '{}' ends before it starts", part));
    if (n_layers >= 0 && hi >= n_layers)
      throw spec_error(field, fmt::format("layer {} is past the model's last layer {}", hi, n_layers - 1));
    for (int l = lo; l <= hi; ++l) layers.insert(l);
    pos = comma + 1;
  }
  return {layers.begin(), layers.end()};
}

JobSpec job_spec_from_json(const json& j) {
  JobSpec s;
  ObjectReader root(j, "");
  root.get("model", s.model);
  root.get("output", s.output);
  if (s.model.empty()) throw spec_error("model", "is required");
  if (s.output.empty()) throw spec_error("output", "is required");

  if (const json* c = root.find("calibration")) {
    ObjectReader r(*c, "calibration");
    r.get("path", s.calibration.path);
    r.get("format", s.calibration.format);
    r.get("samples", s.calibration.samples);
    r.get("seq_len", s.calibration.seq_len);
    r.get("seed", s.calibration.seed);
    r.finish();
  }
  check_one_of("calibration.format", s.calibration.format, {"text", "tokens"});
  if (s.calibration.samples < 1 || s.calibration.samples > 1'000'000)
    throw spec_error("calibration.samples", fmt::format("must be between 1 and 1000000, got {}", s.calibration.samples));
  if (s.calibration.seq_len < 2 || s.calibration.seq_len > 1'048'576)
    throw spec_error("calibration.seq_len", fmt::format("must be between 2 and 1048576, got {}", s.calibration.seq_len));

  std::string method = "gptq";
  if (const json* q = root.find("quant")) {
    ObjectReader r(*q, "quant");
    r.get("method", method);
    // nf4 and int8 have fixed widths and groupings; their defaults follow the method.
    s.quant = quant_config_for_method(s.quant, parse_quant_method("quant.method", method));
    r.get("bits", s.quant.bits);
    r.get("group_size", s.quant.group_size);
    r.get("sym", s.quant.sym);
    r.get("act_order", s.quant.act_order);
    r.get("damp", s.quant.damp);
    r.get("block_size", s.quant.block_size);
    r.get("outlier_threshold", s.quant.int8_outlier_threshold);
    r.finish();
  }
  check_bits_for_method("quant.bits", s.quant.method, s.quant.bits);
  check_group_size("quant.group_size", s.quant.group_size);
  if (s.quant.method == quant_method::nf4 && s.quant.group_size != 64)
    throw spec_error("quant.group_size", fmt::format("must be 64 for nf4 (the QLoRA block), got {}", s.quant.group_size));
  if (!(s.quant.damp >= 0.0f && s.quant.damp <= 1.0f))
    throw spec_error("quant.damp", fmt::format("must be between 0 and 1, got {}", s.quant.damp));
  if (s.quant.block_size < 1 || s.quant.block_size > 65536)
    throw spec_error("quant.block_size", fmt::format("must be between 1 and 65536, got {}", s.quant.block_size));
  if (s.quant.int8_outlier_threshold < 0)
    throw spec_error("quant.outlier_threshold", "must not be negative");

  if (const json* p = root.find("precision")) {
    ObjectReader r(*p, "precision");
    r.get("policy", s.precision.policy);
    if (const json* t = r.find("target_bpw")) s.precision.target_bpw = ObjectReader::convert<double>(*t, "precision.target_bpw");
    if (const json* b = r.find("bit_options")) s.precision.bit_options = int_list(*b, "precision.bit_options");
    r.get("keep_fp16_layers", s.precision.keep_fp16_layers);
    if (const json* c = r.find("components")) s.precision.components = string_list(*c, "precision.components");
    r.get("seed", s.precision.seed);
    if (const json* o = r.find("overrides")) {
      if (!o->is_object()) throw spec_error("precision.overrides", "must be an object of glob -> {\"bits\": n}");
      for (auto it = o->begin(); it != o->end(); ++it) {
        const std::string field = "precision.overrides." + it.key();
        ModuleOverride mo;
        mo.pattern = it.key();
        ObjectReader orr(it.value(), field);
        if (const json* b = orr.find("bits")) mo.bits = ObjectReader::convert<int>(*b, field + ".bits");
        if (const json* m = orr.find("method"))
          mo.method = parse_quant_method(field + ".method", ObjectReader::convert<std::string>(*m, field + ".method"));
        if (const json* g = orr.find("group_size")) mo.group_size = ObjectReader::convert<int>(*g, field + ".group_size");
        orr.finish();
        const quant_method om = mo.method.value_or(s.quant.method);
        if (mo.bits && *mo.bits != 16) check_bits_for_method(field + ".bits", om, *mo.bits);
        if (mo.group_size) check_group_size(field + ".group_size", *mo.group_size);
        s.precision.overrides.push_back(std::move(mo));
      }
    }
    r.finish();
  }
  check_one_of("precision.policy", s.precision.policy, {"uniform", "keep", "lim", "zd", "random", "sensitivity"});
  for (size_t i = 0; i < s.precision.bit_options.size(); ++i) {
    const int b = s.precision.bit_options[i];
    if (b != 2 && b != 3 && b != 4 && b != 8 && b != 16)
      throw spec_error(fmt::format("precision.bit_options[{}]", i), fmt::format("must be one of 2, 3, 4, 8, 16, got {}", b));
  }
  std::sort(s.precision.bit_options.begin(), s.precision.bit_options.end());
  s.precision.bit_options.erase(std::unique(s.precision.bit_options.begin(), s.precision.bit_options.end()),
                                s.precision.bit_options.end());
  if (s.precision.target_bpw && !(*s.precision.target_bpw > 0.0 && *s.precision.target_bpw <= 16.0))
    throw spec_error("precision.target_bpw", fmt::format("must be in (0, 16], got {}", *s.precision.target_bpw));
  const std::string& pol = s.precision.policy;
  if (pol == "lim" || pol == "zd" || pol == "random" || pol == "sensitivity") {
    if (!s.precision.target_bpw) throw spec_error("precision.target_bpw", fmt::format("is required by policy '{}'", pol));
    if (s.precision.bit_options.size() < 2)
      throw spec_error("precision.bit_options", fmt::format("policy '{}' needs at least two bit options", pol));
  }
  if (!s.precision.keep_fp16_layers.empty())
    s.precision.keep_fp16_layer_list = parse_layer_ranges(s.precision.keep_fp16_layers, "precision.keep_fp16_layers");
  if (pol == "keep" && s.precision.keep_fp16_layer_list.empty())
    throw spec_error("precision.keep_fp16_layers", "is required by policy 'keep'");
  if (s.precision.components.empty()) throw spec_error("precision.components", "must name attn, mlp or both");
  for (size_t i = 0; i < s.precision.components.size(); ++i)
    check_one_of(fmt::format("precision.components[{}]", i), s.precision.components[i], {"attn", "mlp"});

  root.get("schedule", s.schedule);
  check_one_of("schedule", s.schedule, {"pipeline", "sequential"});
  root.get("comm", s.comm);
  check_one_of("comm", s.comm, {"auto", "mpi", "nccl"});
  root.get("device", s.device);
  check_one_of("device", s.device, {"auto", "cpu", "cuda"});
  root.get("resume", s.resume);
  root.finish();
  return s;
}

json job_spec_to_json(const JobSpec& s) {
  json overrides = json::object();
  for (const auto& o : s.precision.overrides) {
    json v = json::object();
    if (o.bits) v["bits"] = *o.bits;
    if (o.method) v["method"] = quant_method_name(*o.method);
    if (o.group_size) v["group_size"] = *o.group_size;
    overrides[o.pattern] = v;
  }
  json precision = {{"policy", s.precision.policy},
                    {"bit_options", s.precision.bit_options},
                    {"keep_fp16_layers", s.precision.keep_fp16_layers},
                    {"components", s.precision.components},
                    {"overrides", overrides},
                    {"seed", s.precision.seed}};
  precision["target_bpw"] = s.precision.target_bpw ? json(*s.precision.target_bpw) : json(nullptr);
  return {{"model", s.model},
          {"output", s.output},
          {"calibration",
           {{"path", s.calibration.path},
            {"format", s.calibration.format},
            {"samples", s.calibration.samples},
            {"seq_len", s.calibration.seq_len},
            {"seed", s.calibration.seed}}},
          {"quant",
           {{"method", quant_method_name(s.quant.method)},
            {"bits", s.quant.bits},
            {"group_size", s.quant.group_size},
            {"sym", s.quant.sym},
            {"act_order", s.quant.act_order},
            {"damp", s.quant.damp},
            {"block_size", s.quant.block_size},
            {"outlier_threshold", s.quant.int8_outlier_threshold}}},
          {"precision", precision},
          {"schedule", s.schedule},
          {"comm", s.comm},
          {"device", s.device},
          {"resume", s.resume}};
}

json job_spec_read_file(const std::filesystem::path& path) {
  try {
    return json_file_read(path, fmt::format("job spec '{}'", path.string()));
  } catch (const io_error& e) {
    throw spec_error("config", e.what());
  }
}

void job_spec_check_paths(const JobSpec& s, bool force) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path model(s.model);
  if (!fs::is_directory(model, ec)) throw spec_error("model", fmt::format("'{}' is not a directory", s.model));
  if (!fs::is_regular_file(model / "config.json", ec))
    throw spec_error("model", fmt::format("'{}' has no config.json", s.model));
  if (!s.calibration.path.empty() && !fs::is_regular_file(s.calibration.path, ec))
    throw spec_error("calibration.path", fmt::format("'{}' does not exist or is not a file", s.calibration.path));

  const fs::path model_abs = fs::weakly_canonical(model, ec);
  const fs::path out_abs = fs::weakly_canonical(fs::absolute(s.output), ec);
  for (fs::path p = out_abs; !p.empty(); p = p.parent_path()) {
    if (p == model_abs)
      throw spec_error("output", fmt::format("'{}' is inside the model directory '{}'", s.output, s.model));
    if (p == p.parent_path()) break;
  }
  if (fs::exists(out_abs, ec)) {
    if (!fs::is_directory(out_abs, ec)) throw spec_error("output", fmt::format("'{}' exists and is not a directory", s.output));
    if (!force && !s.resume && output_has_files(out_abs))
      throw spec_error("output", fmt::format("'{}' exists and is not empty (use --force to overwrite or --resume)", s.output));
  }
}

}  // namespace shardq
