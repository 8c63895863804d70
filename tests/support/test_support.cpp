#include "support/test_support.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace shardq::test {

std::filesystem::path shared_dir() {
  if (const char* env = std::getenv("SHARDQ_SHARED")) return env;
#ifdef SHARDQ_SHARED_DIR
  return SHARDQ_SHARED_DIR;
#else
  return "../shared";
#endif
}

TempDir::TempDir(const std::string& tag) {
  std::random_device rd;
  auto base = std::filesystem::temp_directory_path();
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto p = base / (tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    if (std::filesystem::create_directory(p)) {
      path_ = p;
      return;
    }
  }
  throw std::runtime_error("cannot create a temporary directory");
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!std::getenv("SHARDQ_KEEP_TEMP")) std::filesystem::remove_all(path_, ec);
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

CommandResult run_command(const std::string& command) {
  TempDir dir("shardq-cmd");
  const auto out = dir / "out", err = dir / "err";
  const std::string full = "(" + command + ") >'" + out.string() + "' 2>'" + err.string() + "'";
  const int status = std::system(full.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_text(out);
  r.err = read_text(err);
  return r;
}

ModelConfig stories260k_shape() {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 172;
  c.num_layers = 5;
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.head_dim = 8;
  c.vocab_size = 512;
  return c;
}

std::string shardq_bin() {
  if (const char* env = std::getenv("SHARDQ_BIN")) return env;
#ifdef SHARDQ_BIN_PATH
  return SHARDQ_BIN_PATH;
#else
  return "shardq";
#endif
}

}  // namespace shardq::test
