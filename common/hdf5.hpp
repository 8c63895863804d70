// Small RAII wrappers over the HDF5 C API (file, group, dataset, dataspace, datatype,
// property list, attribute). Nothing else in shardq calls H5* functions directly.
//
// Every call is checked: a failure throws io_error naming the call, the file and the object
// path, plus the most specific message from HDF5's error stack, e.g.
//   "H5Fopen failed on 'out/shard-00000.h5': file signature not found".
// HDF5's own printing of error stacks is turned off (silence_errors(), called by every entry
// point here) so a user sees that one line and nothing else. Destructors never throw (they
// close with the return value ignored, as HighFive does).
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace shardq::h5 {

// Turns off HDF5's automatic error-stack printing for the calling thread (idempotent).
void silence_errors();

// Throws io_error "<call> failed on '<file>' <object>: <HDF5 message>" when `status` < 0,
// and returns `status` otherwise (so hid_t results pass through).
int64_t check(int64_t status, const char* call, const std::string& file, const std::string& object = "");

// Owns one hid_t and closes it with the matching H5*close. Move-only. Carries the file name
// and object path for error messages.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer, std::string file, std::string path)
      : id_(id), closer_(closer), file_(std::move(file)), path_(std::move(path)) {}
  ~Handle() { reset(); }
  Handle(Handle&& other) noexcept { *this = std::move(other); }
  Handle& operator=(Handle&& other) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t id() const { return id_; }
  bool valid() const { return id_ >= 0; }
  const std::string& file() const { return file_; }
  const std::string& path() const { return path_; }
  // Closes now; errors are ignored (a destructor must not throw).
  void reset() noexcept;

 protected:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
  std::string file_;
  std::string path_;
};

// The HDF5 native memory type of T (uint8/16/32, int32/64, float, double).
template <typename T>
hid_t native_type();

class Dataspace : public Handle {
 public:
  using Handle::Handle;
  static Dataspace simple(std::span<const hsize_t> dims);
  static Dataspace scalar();
  std::vector<hsize_t> dims() const;
};

class Datatype : public Handle {
 public:
  using Handle::Handle;
  // A copy of a predefined type (so it can be modified and is closed with H5Tclose).
  static Datatype copy(hid_t predefined);
  // IEEE 754 binary16, little endian: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
  // h5py and numpy recognise this layout as float16.
  static Datatype ieee_f16();
  // Variable-length UTF-8 string (h5py reads it as str).
  static Datatype utf8_string();
  H5T_class_t type_class() const;
  size_t size() const;
  bool equals(hid_t other) const;
};

class PropList : public Handle {
 public:
  using Handle::Handle;
  static PropList create(hid_t cls);
  void set_chunk(std::span<const hsize_t> chunk);
  void set_deflate(unsigned level);
};

class Attribute : public Handle {
 public:
  using Handle::Handle;
  Datatype file_type() const;
  Dataspace space() const;
};

// An object that carries attributes (group, dataset, file root).
class Object : public Handle {
 public:
  using Handle::Handle;
  bool has_attribute(const std::string& name) const;
  void write_attribute(const std::string& name, int64_t value);
  void write_attribute(const std::string& name, const std::vector<int64_t>& values);
  void write_attribute(const std::string& name, const std::string& value);
  int64_t read_attribute_int(const std::string& name) const;
  std::vector<int64_t> read_attribute_ints(const std::string& name) const;
  std::string read_attribute_string(const std::string& name) const;

 private:
  Attribute open_attribute(const std::string& name) const;
  void write_int_attribute(const std::string& name, std::span<const int64_t> values, bool scalar);
};

class Dataset : public Object {
 public:
  using Object::Object;
  Dataspace space() const;
  Datatype file_type() const;
  std::vector<hsize_t> dims() const { return space().dims(); }
  // Whole-dataset transfer of `mem_type` elements; `count` must equal the dataset size.
  void write_raw(hid_t mem_type, const void* data, size_t count);
  void read_raw(hid_t mem_type, void* data, size_t count) const;

  template <typename T>
  void write(std::span<const T> data) { write_raw(native_type<T>(), data.data(), data.size()); }
  // Reads the whole dataset converted to T (HDF5 converts between numeric types).
  template <typename T>
  std::vector<T> read() const {
    std::vector<T> out(element_count());
    read_raw(native_type<T>(), out.data(), out.size());
    return out;
  }
  // IEEE binary16 data as raw bit patterns. The memory type is the half type itself, so
  // HDF5 copies bits; passing H5T_NATIVE_UINT16 instead would convert integer *values*.
  void write_f16_bits(std::span<const uint16_t> bits);
  // io_error unless the dataset holds 2-byte floats.
  std::vector<uint16_t> read_f16_bits() const;
  size_t element_count() const;
  std::string read_string() const;  // a scalar variable-length string dataset
};

// A file or group: something that holds links.
class Group : public Object {
 public:
  using Object::Object;
  Group create_group(const std::string& name);
  Group open_group(const std::string& name) const;
  // A dataset of `file_type` with shape `dims`; `dcpl` (chunking, filters) is optional.
  Dataset create_dataset(const std::string& name, const Datatype& file_type, std::span<const hsize_t> dims,
                         const PropList* dcpl = nullptr);
  Dataset open_dataset(const std::string& name) const;
  // Writes a whole dataset in one call, stored as `file_type` (defaults to T's native type).
  template <typename T>
  Dataset write_dataset(const std::string& name, std::span<const T> data, std::span<const hsize_t> dims,
                        hid_t file_type = -1, const PropList* dcpl = nullptr) {
    Dataset ds = create_dataset(name, Datatype::copy(file_type < 0 ? native_type<T>() : file_type), dims, dcpl);
    ds.write(data);
    return ds;
  }
  void write_string_dataset(const std::string& name, const std::string& value);
  // An external link NAME -> TARGET_FILE:TARGET_PATH (target file relative to the linking
  // file's directory, so the checkpoint directory can be moved as a whole).
  void create_external_link(const std::string& name, const std::string& target_file, const std::string& target_path);

  // Whether a link NAME exists here (without following it).
  bool has_link(const std::string& name) const;
  // Names of the links directly in this group, in name order.
  std::vector<std::string> link_names() const;
  // The type of the object a link resolves to (following external links).
  H5O_type_t object_type(const std::string& name) const;
};

class File : public Group {
 public:
  using Group::Group;
  // Creates (truncating) a file for writing.
  static File create(const std::filesystem::path& path);
  // Opens an existing file read-only.
  static File open_read(const std::filesystem::path& path);
  void flush();
  // Closes and reports a close failure (unlike reset(), which must stay silent).
  void close();
};

}  // namespace shardq::h5
