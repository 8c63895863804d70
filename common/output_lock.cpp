// fcntl(F_OFD_SETLK) on OUTPUT/.shardq-lock; see output_lock.hpp.
#include "common/output_lock.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>

#include <fmt/chrono.h>
#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/log.hpp"

namespace shardq {
namespace {

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "unknown";
  return name;
}

// Who holds the lock, as its holder wrote it; empty when the file does not say (yet).
std::string holder_of(int fd) {
  std::string text(4096, '\0');
  const ssize_t n = ::pread(fd, text.data(), text.size(), 0);
  if (n <= 0) return {};
  text.resize(static_cast<size_t>(n));
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("pid") || !j.contains("host") || !j.contains("started_at")) return {};
  return fmt::format("pid {} on host {}, since {}", j["pid"].dump(), j["host"].get<std::string>(),
                     j["started_at"].get<std::string>());
}

}  // namespace

std::string output_busy_message(const std::filesystem::path& output_dir, const std::string& holder) {
  return fmt::format("'{}' is being written by another shardq job{}; wait for it to end or stop it", output_dir.string(),
                     holder.empty() ? std::string() : " (" + holder + ")");
}

std::optional<std::string> output_lock_holder(const std::filesystem::path& output_dir) {
  const std::filesystem::path path = output_dir / output_lock_file_name;
  const UniqueFd file{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)};
  if (!file) return std::nullopt;  // no lock file (or not one a job made): no job has written here
  struct flock probe {};
  probe.l_type = F_WRLCK;
  probe.l_whence = SEEK_SET;
  if (::fcntl(file.get(), F_OFD_GETLK, &probe) != 0 || probe.l_type == F_UNLCK) return std::nullopt;
  return holder_of(file.get());
}

bool output_has_files(const std::filesystem::path& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
    if (entry.path().filename() != output_lock_file_name) return true;
  return false;
}

OutputLock::OutputLock(const std::filesystem::path& output_dir) {
  std::error_code ec;
  std::filesystem::create_directories(output_dir, ec);
  io_check(!ec, "cannot create output directory '{}': {}", output_dir.string(), ec.message());
  const std::filesystem::path path = output_dir / output_lock_file_name;
  // Never through a symlink (the record below would truncate whatever it names) and never
  // waiting on a FIFO someone put there: a user's file is not ours to lock or to write.
  file_ = UniqueFd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644));
  io_check(bool(file_), "cannot open lock file '{}': {}", path.string(), std::strerror(errno));
  struct stat st {};
  io_check(::fstat(file_.get(), &st) == 0 && S_ISREG(st.st_mode), "lock file '{}' is not a regular file", path.string());
  struct flock lock {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;  // l_start = l_len = 0: the whole file
  if (::fcntl(file_.get(), F_OFD_SETLK, &lock) != 0) {
    const int saved = errno;
    if (saved == EAGAIN || saved == EACCES)
      throw spec_error("output", output_busy_message(output_dir, holder_of(file_.get())));
    // Locks switched off where the file lives (Lustre mounted noflock: ENOSYS; NFS without
    // its lock manager: ENOLCK; a kernel before 3.15: EINVAL): best effort, as HDF5 does
    // with H5_IGNORE_DISABLED_FILE_LOCKS. Refusing would make such a cluster's scratch
    // unusable for a check that only guards against a second job.
    if (saved == ENOSYS || saved == ENOLCK || saved == EOPNOTSUPP || saved == EINVAL) {
      spdlog::warn("output: '{}' is on a filesystem that refuses fcntl locks ({}); the job runs, but a second job "
                   "writing this output at the same time will not be stopped",
                   output_dir.string(), std::strerror(saved));
      file_.reset();
      return;
    }
    throw io_error(fmt::format("cannot lock '{}': {}", path.string(), std::strerror(saved)));
  }
  const std::string record =
      nlohmann::json{{"pid", static_cast<long>(::getpid())},
                     {"host", host_name()},
                     {"started_at", fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", fmt::gmtime(std::chrono::system_clock::now()))}}
          .dump() +
      "\n";
  // What the file says is only for the message above; the lock is held whether or not it is written.
  if (::ftruncate(file_.get(), 0) == 0) {
    [[maybe_unused]] const ssize_t n = ::pwrite(file_.get(), record.data(), record.size(), 0);
  }
}

}  // namespace shardq
