// RAII wrappers over the HDF5 C API; see hdf5.hpp.
#include "common/hdf5.hpp"

#include <utility>

#include "common/error.hpp"

namespace shardq::h5 {
namespace {

// The deepest entry of HDF5's error stack is the most specific ("file signature not
// found", "Permission denied"); the outer ones repeat "unable to open file".
herr_t deepest_error(unsigned, const H5E_error2_t* e, void* out) {
  if (e->desc && *e->desc) *static_cast<std::string*>(out) = e->desc;
  return 0;
}

// The POSIX driver's descriptions carry the whole write call ("file write failed: time =
// ..., errno = 28, error message = 'No space left on device', buf = ..."): keep the reason.
std::string system_reason(const std::string& message) {
  const std::string key = "error message = '";
  const auto at = message.find(key);
  if (at == std::string::npos) return message;
  const auto end = message.find('\'', at + key.size());
  if (end == std::string::npos) return message;
  const std::string what = message.substr(0, message.find(':'));
  return fmt::format("{}: {}", what, message.substr(at + key.size(), end - at - key.size()));
}

std::string take_error_message() {
  std::string message;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, deepest_error, &message);
  H5Eclear2(H5E_DEFAULT);
  return message.empty() ? "unknown HDF5 error" : system_reason(message);
}

std::string object_path(const std::string& parent, const std::string& name) {
  if (parent.empty() || parent == "/") return "/" + name;
  return parent + "/" + name;
}

}  // namespace

// Debian's libhdf5 is built thread-safe, and then the error stack and its printing are per
// thread: each thread that calls HDF5 (the layer-shard writer beside the main one) turns it off.
void silence_errors() {
  thread_local const bool silenced = H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr) >= 0;
  (void)silenced;
}

int64_t check(int64_t status, const char* call, const std::string& file, const std::string& object) {
  if (status >= 0) return status;
  const std::string detail = take_error_message();
  if (object.empty() || object == "/") throw io_error(fmt::format("{} failed on '{}': {}", call, file, detail));
  throw io_error(fmt::format("{} failed on '{}' object '{}': {}", call, file, object, detail));
}

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = std::exchange(other.id_, H5I_INVALID_HID);
    closer_ = other.closer_;
    file_ = std::move(other.file_);
    path_ = std::move(other.path_);
  }
  return *this;
}

void Handle::reset() noexcept {
  if (id_ >= 0 && closer_) {
    if (closer_(id_) < 0) H5Eclear2(H5E_DEFAULT);
  }
  id_ = H5I_INVALID_HID;
}

template <> hid_t native_type<uint8_t>() { return H5T_NATIVE_UINT8; }
template <> hid_t native_type<uint16_t>() { return H5T_NATIVE_UINT16; }
template <> hid_t native_type<uint32_t>() { return H5T_NATIVE_UINT32; }
template <> hid_t native_type<int32_t>() { return H5T_NATIVE_INT32; }
template <> hid_t native_type<int64_t>() { return H5T_NATIVE_INT64; }
template <> hid_t native_type<float>() { return H5T_NATIVE_FLOAT; }
template <> hid_t native_type<double>() { return H5T_NATIVE_DOUBLE; }

// --- Dataspace ----------------------------------------------------------------------------

Dataspace Dataspace::simple(std::span<const hsize_t> dims) {
  silence_errors();
  const hid_t id = check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                         "H5Screate_simple", "(memory)");
  return Dataspace(id, H5Sclose, "(memory)", "");
}

Dataspace Dataspace::scalar() {
  silence_errors();
  return Dataspace(check(H5Screate(H5S_SCALAR), "H5Screate", "(memory)"), H5Sclose, "(memory)", "");
}

std::vector<hsize_t> Dataspace::dims() const {
  const int rank = static_cast<int>(check(H5Sget_simple_extent_ndims(id_), "H5Sget_simple_extent_ndims", file_, path_));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  check(H5Sget_simple_extent_dims(id_, dims.data(), nullptr), "H5Sget_simple_extent_dims", file_, path_);
  return dims;
}

// --- Datatype -----------------------------------------------------------------------------

Datatype Datatype::copy(hid_t predefined) {
  silence_errors();
  return Datatype(check(H5Tcopy(predefined), "H5Tcopy", "(memory)"), H5Tclose, "(memory)", "");
}

Datatype Datatype::ieee_f16() {
  // Start from IEEE f32 LE and shrink it: sign at bit 15, exponent bits 10..14, mantissa
  // bits 0..9, exponent bias 15. Order matters: fields must fit the size when it shrinks.
  Datatype t = copy(H5T_IEEE_F32LE);
  check(H5Tset_fields(t.id(), 15, 10, 5, 0, 10), "H5Tset_fields", "(memory)", "float16");
  check(H5Tset_size(t.id(), 2), "H5Tset_size", "(memory)", "float16");
  check(H5Tset_ebias(t.id(), 15), "H5Tset_ebias", "(memory)", "float16");
  return t;
}

Datatype Datatype::utf8_string() {
  Datatype t = copy(H5T_C_S1);
  check(H5Tset_size(t.id(), H5T_VARIABLE), "H5Tset_size", "(memory)", "string");
  check(H5Tset_cset(t.id(), H5T_CSET_UTF8), "H5Tset_cset", "(memory)", "string");
  return t;
}

H5T_class_t Datatype::type_class() const {
  const H5T_class_t c = H5Tget_class(id_);
  check(c == H5T_NO_CLASS ? -1 : 0, "H5Tget_class", file_, path_);
  return c;
}

size_t Datatype::size() const {
  const size_t s = H5Tget_size(id_);
  check(s == 0 ? -1 : 0, "H5Tget_size", file_, path_);
  return s;
}

bool Datatype::equals(hid_t other) const {
  return check(H5Tequal(id_, other), "H5Tequal", file_, path_) > 0;
}

// --- PropList -----------------------------------------------------------------------------

PropList PropList::create(hid_t cls) {
  silence_errors();
  return PropList(check(H5Pcreate(cls), "H5Pcreate", "(memory)"), H5Pclose, "(memory)", "");
}

void PropList::set_chunk(std::span<const hsize_t> chunk) {
  check(H5Pset_chunk(id_, static_cast<int>(chunk.size()), chunk.data()), "H5Pset_chunk", file_, path_);
}

void PropList::set_deflate(unsigned level) {
  check(H5Pset_deflate(id_, level), "H5Pset_deflate", file_, path_);
}

// --- Attribute / Object -------------------------------------------------------------------

Datatype Attribute::file_type() const {
  return Datatype(check(H5Aget_type(id_), "H5Aget_type", file_, path_), H5Tclose, file_, path_);
}

Dataspace Attribute::space() const {
  return Dataspace(check(H5Aget_space(id_), "H5Aget_space", file_, path_), H5Sclose, file_, path_);
}

bool Object::has_attribute(const std::string& name) const {
  return check(H5Aexists(id_, name.c_str()), "H5Aexists", file_, path_ + "@" + name) > 0;
}

Attribute Object::open_attribute(const std::string& name) const {
  const std::string where = path_ + "@" + name;
  return Attribute(check(H5Aopen(id_, name.c_str(), H5P_DEFAULT), "H5Aopen", file_, where), H5Aclose, file_, where);
}

void Object::write_attribute(const std::string& name, int64_t value) {
  write_int_attribute(name, std::span<const int64_t>(&value, 1), true);
}

void Object::write_attribute(const std::string& name, const std::vector<int64_t>& values) {
  write_int_attribute(name, values, false);
}

void Object::write_int_attribute(const std::string& name, std::span<const int64_t> values, bool scalar) {
  const std::string where = path_ + "@" + name;
  if (has_attribute(name)) check(H5Adelete(id_, name.c_str()), "H5Adelete", file_, where);
  const hsize_t n = values.size();
  Dataspace space = scalar ? Dataspace::scalar() : Dataspace::simple(std::span<const hsize_t>(&n, 1));
  Attribute a(check(H5Acreate2(id_, name.c_str(), H5T_STD_I64LE, space.id(), H5P_DEFAULT, H5P_DEFAULT),
                    "H5Acreate2", file_, where),
              H5Aclose, file_, where);
  check(H5Awrite(a.id(), H5T_NATIVE_INT64, values.data()), "H5Awrite", file_, where);
}

void Object::write_attribute(const std::string& name, const std::string& value) {
  const std::string where = path_ + "@" + name;
  if (has_attribute(name)) check(H5Adelete(id_, name.c_str()), "H5Adelete", file_, where);
  Datatype type = Datatype::utf8_string();
  Dataspace space = Dataspace::scalar();
  Attribute a(check(H5Acreate2(id_, name.c_str(), type.id(), space.id(), H5P_DEFAULT, H5P_DEFAULT),
                    "H5Acreate2", file_, where),
              H5Aclose, file_, where);
  const char* p = value.c_str();
  check(H5Awrite(a.id(), type.id(), &p), "H5Awrite", file_, where);
}

std::vector<int64_t> Object::read_attribute_ints(const std::string& name) const {
  Attribute a = open_attribute(name);
  const Datatype type = a.file_type();
  if (type.type_class() != H5T_INTEGER) throw io_error(fmt::format("'{}' object '{}': attribute '{}' is not an integer", file_, path_, name));
  const hssize_t n = H5Sget_simple_extent_npoints(a.space().id());
  check(n, "H5Sget_simple_extent_npoints", file_, path_ + "@" + name);
  std::vector<int64_t> values(static_cast<size_t>(n));
  check(H5Aread(a.id(), H5T_NATIVE_INT64, values.data()), "H5Aread", file_, path_ + "@" + name);
  return values;
}

int64_t Object::read_attribute_int(const std::string& name) const {
  const std::vector<int64_t> v = read_attribute_ints(name);
  if (v.size() != 1) throw io_error(fmt::format("'{}' object '{}': attribute '{}' has {} values, expected 1", file_, path_, name, v.size()));
  return v[0];
}

std::string Object::read_attribute_string(const std::string& name) const {
  Attribute a = open_attribute(name);
  const std::string where = path_ + "@" + name;
  const Datatype type = a.file_type();
  if (type.type_class() != H5T_STRING) throw io_error(fmt::format("'{}' object '{}': attribute '{}' is not a string", file_, path_, name));
  if (check(H5Tis_variable_str(type.id()), "H5Tis_variable_str", file_, where) > 0) {
    Datatype mem = Datatype::utf8_string();
    char* p = nullptr;
    check(H5Aread(a.id(), mem.id(), &p), "H5Aread", file_, where);
    std::string out = p ? p : "";
    H5free_memory(p);
    return out;
  }
  std::string out(type.size(), '\0');
  check(H5Aread(a.id(), type.id(), out.data()), "H5Aread", file_, where);
  out.resize(out.find('\0') == std::string::npos ? out.size() : out.find('\0'));
  return out;
}

// --- Dataset ------------------------------------------------------------------------------

Dataspace Dataset::space() const {
  return Dataspace(check(H5Dget_space(id_), "H5Dget_space", file_, path_), H5Sclose, file_, path_);
}

Datatype Dataset::file_type() const {
  return Datatype(check(H5Dget_type(id_), "H5Dget_type", file_, path_), H5Tclose, file_, path_);
}

size_t Dataset::element_count() const {
  const hssize_t n = H5Sget_simple_extent_npoints(space().id());
  return static_cast<size_t>(check(n, "H5Sget_simple_extent_npoints", file_, path_));
}

void Dataset::write_raw(hid_t mem_type, const void* data, size_t count) {
  const size_t n = element_count();
  if (count != n) throw io_error(fmt::format("'{}' object '{}': writing {} elements into a dataset of {}", file_, path_, count, n));
  if (n == 0) return;
  check(H5Dwrite(id_, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "H5Dwrite", file_, path_);
}

void Dataset::read_raw(hid_t mem_type, void* data, size_t count) const {
  const size_t n = element_count();
  if (count != n) throw io_error(fmt::format("'{}' object '{}': reading {} elements from a dataset of {}", file_, path_, n, count));
  if (n == 0) return;
  check(H5Dread(id_, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "H5Dread", file_, path_);
}

void Dataset::write_f16_bits(std::span<const uint16_t> bits) {
  const Datatype half = Datatype::ieee_f16();
  write_raw(half.id(), bits.data(), bits.size());
}

std::vector<uint16_t> Dataset::read_f16_bits() const {
  const Datatype type = file_type();
  if (type.type_class() != H5T_FLOAT || type.size() != 2)
    throw io_error(fmt::format("'{}' object '{}': expected float16 data", file_, path_));
  const Datatype half = Datatype::ieee_f16();
  std::vector<uint16_t> bits(element_count());
  read_raw(half.id(), bits.data(), bits.size());
  return bits;
}

std::string Dataset::read_string() const {
  Datatype mem = Datatype::utf8_string();
  char* p = nullptr;
  check(H5Dread(id_, mem.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &p), "H5Dread", file_, path_);
  std::string out = p ? p : "";
  H5free_memory(p);
  return out;
}

// --- Group --------------------------------------------------------------------------------

namespace {
// Object creation properties with modification times off: the same tensors then give the
// same file bytes, so shard checksums compare across runs, rank counts and resumes.
PropList untimed(const PropList* base, hid_t cls) {
  PropList p = base ? PropList(check(H5Pcopy(base->id()), "H5Pcopy", "(memory)"), H5Pclose, "(memory)", "")
                    : PropList::create(cls);
  check(H5Pset_obj_track_times(p.id(), false), "H5Pset_obj_track_times", "(memory)");
  return p;
}
}  // namespace

Group Group::create_group(const std::string& name) {
  const std::string where = object_path(path_, name);
  const PropList gcpl = untimed(nullptr, H5P_GROUP_CREATE);
  return Group(check(H5Gcreate2(id_, name.c_str(), H5P_DEFAULT, gcpl.id(), H5P_DEFAULT), "H5Gcreate2", file_, where),
               H5Gclose, file_, where);
}

Group Group::open_group(const std::string& name) const {
  const std::string where = object_path(path_, name);
  return Group(check(H5Gopen2(id_, name.c_str(), H5P_DEFAULT), "H5Gopen2", file_, where), H5Gclose, file_, where);
}

Dataset Group::create_dataset(const std::string& name, const Datatype& file_type, std::span<const hsize_t> dims,
                              const PropList* dcpl) {
  const std::string where = object_path(path_, name);
  Dataspace space = Dataspace::simple(dims);
  const PropList props = untimed(dcpl, H5P_DATASET_CREATE);
  return Dataset(check(H5Dcreate2(id_, name.c_str(), file_type.id(), space.id(), H5P_DEFAULT, props.id(), H5P_DEFAULT),
                       "H5Dcreate2", file_, where),
                 H5Dclose, file_, where);
}

Dataset Group::open_dataset(const std::string& name) const {
  const std::string where = object_path(path_, name);
  return Dataset(check(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), "H5Dopen2", file_, where), H5Dclose, file_, where);
}

void Group::write_string_dataset(const std::string& name, const std::string& value) {
  const std::string where = object_path(path_, name);
  Datatype type = Datatype::utf8_string();
  Dataspace space = Dataspace::scalar();
  const PropList props = untimed(nullptr, H5P_DATASET_CREATE);
  Dataset ds(check(H5Dcreate2(id_, name.c_str(), type.id(), space.id(), H5P_DEFAULT, props.id(), H5P_DEFAULT),
                   "H5Dcreate2", file_, where),
             H5Dclose, file_, where);
  const char* p = value.c_str();
  check(H5Dwrite(ds.id(), type.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &p), "H5Dwrite", file_, where);
}

void Group::create_external_link(const std::string& name, const std::string& target_file, const std::string& target_path) {
  check(H5Lcreate_external(target_file.c_str(), target_path.c_str(), id_, name.c_str(), H5P_DEFAULT, H5P_DEFAULT),
        "H5Lcreate_external", file_, object_path(path_, name));
}

bool Group::has_link(const std::string& name) const {
  return check(H5Lexists(id_, name.c_str(), H5P_DEFAULT), "H5Lexists", file_, object_path(path_, name)) > 0;
}

namespace {
herr_t collect_name(hid_t, const char* name, const H5L_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}
}  // namespace

std::vector<std::string> Group::link_names() const {
  std::vector<std::string> names;
  hsize_t index = 0;
  check(H5Literate(id_, H5_INDEX_NAME, H5_ITER_INC, &index, collect_name, &names), "H5Literate", file_, path_);
  return names;
}

H5O_type_t Group::object_type(const std::string& name) const {
  H5O_info_t info;
  check(H5Oget_info_by_name(id_, name.c_str(), &info, H5P_DEFAULT), "H5Oget_info_by_name", file_, object_path(path_, name));
  return info.type;
}

// --- File ---------------------------------------------------------------------------------

namespace {
// SEMI: H5Fclose fails while objects of the file are still open, instead of silently
// keeping the file open (WEAK) — a writer must be sure the bytes are out before rename.
PropList file_access() {
  PropList fapl = PropList::create(H5P_FILE_ACCESS);
  check(H5Pset_fclose_degree(fapl.id(), H5F_CLOSE_SEMI), "H5Pset_fclose_degree", "(memory)");
  return fapl;
}
}  // namespace

File File::create(const std::filesystem::path& path) {
  silence_errors();
  const std::string name = path.string();
  PropList fapl = file_access();
  return File(check(H5Fcreate(name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.id()), "H5Fcreate", name), H5Fclose,
              name, "/");
}

File File::open_read(const std::filesystem::path& path) {
  silence_errors();
  const std::string name = path.string();
  return File(check(H5Fopen(name.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "H5Fopen", name), H5Fclose, name, "/");
}

void File::flush() {
  check(H5Fflush(id_, H5F_SCOPE_LOCAL), "H5Fflush", file_);
}

void File::close() {
  if (id_ < 0) return;
  const hid_t id = std::exchange(id_, H5I_INVALID_HID);
  check(H5Fclose(id), "H5Fclose", file_);
}

}  // namespace shardq::h5
