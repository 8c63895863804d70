// LD_PRELOAD shim for tests: every fcntl record lock fails with ENOSYS, as on a Lustre
// client mounted `noflock`, so a test can run the real shardq binary on a filesystem that
// refuses locks (common/output_lock.hpp). Every other fcntl command goes to libc.
#include <dlfcn.h>
#include <fcntl.h>

#include <cerrno>
#include <cstdarg>

namespace {

using fcntl_fn = int (*)(int, int, ...);

bool is_record_lock(int cmd) {
  return cmd == F_GETLK || cmd == F_SETLK || cmd == F_SETLKW || cmd == F_OFD_GETLK || cmd == F_OFD_SETLK ||
         cmd == F_OFD_SETLKW;
}

// The third argument is an int or a pointer; on the x86-64 and aarch64 ABIs a pointer-sized
// read of it passes either on unchanged (glibc's own fcntl wrapper reads it the same way).
int forward(const char* name, int fd, int cmd, void* arg) {
  if (is_record_lock(cmd)) {
    errno = ENOSYS;
    return -1;
  }
  static const auto real = reinterpret_cast<fcntl_fn>(dlsym(RTLD_NEXT, name));
  if (!real) {
    errno = ENOSYS;
    return -1;
  }
  return real(fd, cmd, arg);
}

}  // namespace

extern "C" int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return forward("fcntl", fd, cmd, arg);
}

extern "C" int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return forward("fcntl64", fd, cmd, arg);
}
