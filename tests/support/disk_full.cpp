// LD_PRELOAD shim for tests: every write to a file whose name ends in SHARDQ_DISK_FULL_SUFFIX
// (default ".h5.tmp", a shard being written) fails with ENOSPC, as on a filesystem that
// filled up while the job ran. A test used to point NAME.tmp at /dev/full instead; the writers
// now remove whatever is at NAME.tmp before creating it (common/atomic_file.hpp), so the disk
// has to fill at the write itself. Writes to every other file go to libc.
#include <dlfcn.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

bool on_the_full_disk(int fd) {
  const char* env = std::getenv("SHARDQ_DISK_FULL_SUFFIX");
  const std::string suffix = env && *env ? env : ".h5.tmp";
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  char path[4096];
  const ssize_t n = readlink(link.c_str(), path, sizeof path - 1);
  if (n <= 0) return false;
  const std::string name(path, static_cast<size_t>(n));
  return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

template <class Fn>
Fn real(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" ssize_t write(int fd, const void* buf, size_t count) {
  if (on_the_full_disk(fd)) {
    errno = ENOSPC;
    return -1;
  }
  static const auto fn = real<ssize_t (*)(int, const void*, size_t)>("write");
  return fn(fd, buf, count);
}

extern "C" ssize_t pwrite(int fd, const void* buf, size_t count, off_t offset) {
  if (on_the_full_disk(fd)) {
    errno = ENOSPC;
    return -1;
  }
  static const auto fn = real<ssize_t (*)(int, const void*, size_t, off_t)>("pwrite");
  return fn(fd, buf, count, offset);
}

extern "C" ssize_t pwrite64(int fd, const void* buf, size_t count, off64_t offset) {
  if (on_the_full_disk(fd)) {
    errno = ENOSPC;
    return -1;
  }
  static const auto fn = real<ssize_t (*)(int, const void*, size_t, off64_t)>("pwrite64");
  return fn(fd, buf, count, offset);
}

extern "C" ssize_t writev(int fd, const struct iovec* iov, int iovcnt) {
  if (on_the_full_disk(fd)) {
    errno = ENOSPC;
    return -1;
  }
  static const auto fn = real<ssize_t (*)(int, const struct iovec*, int)>("writev");
  return fn(fd, iov, iovcnt);
}
