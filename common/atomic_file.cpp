// tmp + fsync + rename + fsync(dir); see atomic_file.hpp.
#include "common/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/error.hpp"
#include "common/unique_fd.hpp"

namespace shardq {
namespace {

void fsync_path(const std::filesystem::path& path, bool directory) {
  const UniqueFd file{::open(path.c_str(), (directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY) | O_CLOEXEC)};
  io_check(bool(file), "cannot open '{}' to fsync: {}", path.string(), std::strerror(errno));
  io_check(::fsync(file.get()) == 0, "fsync of '{}' failed: {}", path.string(), std::strerror(errno));
}

}  // namespace

std::filesystem::path temp_path_for(const std::filesystem::path& final_path) {
  return std::filesystem::path(final_path.string() + ".tmp");
}

std::filesystem::path temp_path_fresh(const std::filesystem::path& final_path) {
  std::filesystem::path tmp = temp_path_for(final_path);
  std::error_code ec;
  std::filesystem::remove(tmp, ec);  // the entry itself: a symlink, not what it names
  // ENOTDIR: nothing can be there; creating the file fails next and says so.
  io_check(!ec || ec == std::errc::not_a_directory, "cannot remove '{}': {}", tmp.string(), ec.message());
  return tmp;
}

void publish_file(const std::filesystem::path& tmp, const std::filesystem::path& final_path) {
  fsync_path(tmp, false);
  io_check(std::rename(tmp.c_str(), final_path.c_str()) == 0, "cannot rename '{}' to '{}': {}", tmp.string(),
           final_path.string(), std::strerror(errno));
  const std::filesystem::path dir = final_path.has_parent_path() ? final_path.parent_path() : ".";
  fsync_path(dir, true);
}

void write_file_atomic(const std::filesystem::path& path, std::string_view content) {
  const std::filesystem::path tmp = temp_path_fresh(path);
  {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    io_check(f != nullptr, "cannot create '{}': {}", tmp.string(), std::strerror(errno));
    const size_t written = std::fwrite(content.data(), 1, content.size(), f);
    bool ok = written == content.size() && std::fflush(f) == 0;
    ok = (std::fclose(f) == 0) && ok;
    const int saved = errno;
    if (!ok) {
      std::remove(tmp.c_str());
      throw io_error(fmt::format("failed to write '{}': {}", tmp.string(), std::strerror(saved)));
    }
  }
  publish_file(tmp, path);
}

}  // namespace shardq
