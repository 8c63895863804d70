// Read-only memory map of a whole file; see mapped_file.hpp.
#include "common/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "common/error.hpp"
#include "common/unique_fd.hpp"

namespace shardq {

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path) {
  // Closed on every path out of the constructor; the mapping outlives it. O_NONBLOCK: a FIFO
  // in the file's place would block open(2) until a writer came; it is refused below instead.
  const UniqueFd file{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)};
  if (!file) {
    throw io_error(fmt::format("cannot open '{}': {}", path.string(), std::strerror(errno)));
  }
  const int fd = file.get();
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    throw io_error(fmt::format("cannot stat '{}': {}", path.string(), std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) throw io_error(fmt::format("'{}' is not a regular file", path.string()));
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ == 0) return;
  void* p = ::mmap(nullptr, static_cast<std::size_t>(size_), PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) {
    throw io_error(fmt::format("cannot map '{}' ({} bytes): {}", path.string(), size_,
                               std::strerror(errno)));
  }
  data_ = static_cast<const std::byte*>(p);
}

MappedFile::~MappedFile() { release(); }

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void MappedFile::release() noexcept {
  if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), static_cast<std::size_t>(size_));
  data_ = nullptr;
  size_ = 0;
}

}  // namespace shardq
