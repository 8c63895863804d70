// Helpers shared by tests: where the shared data lives, temporary directories, running the
// shardq executable.
#pragma once

#include <filesystem>
#include <string>

#include "common/model_config.hpp"

namespace shardq::test {

// ../shared of the source tree (SHARDQ_SHARED overrides).
std::filesystem::path shared_dir();
// A fresh, empty directory removed when the object goes out of scope.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "shardq-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Runs a shell command, capturing stdout and stderr separately.
struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
CommandResult run_command(const std::string& command);
// The shardq executable under test (SHARDQ_BIN).
std::string shardq_bin();

std::string read_text(const std::filesystem::path& path);

// The shape of ../shared/models/stories260K (dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads,
// head_dim 8, vocab 512) without its weights.
ModelConfig stories260k_shape();

}  // namespace shardq::test
