#include "coordinator/hidden_snapshot.hpp"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include <fmt/format.h>

#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "common/sha256.hpp"

namespace shardq {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// First estimate of the write bandwidth, before one snapshot was timed (a parallel file
// system per rank; the measured time replaces it).
constexpr double assumed_bytes_per_second = 500e6;
// Take a snapshot once replaying since the last one would cost this many times its write.
constexpr double replay_to_write_ratio = 4.0;

std::span<const std::byte> bytes_of(const std::vector<float>& v) {
  return {reinterpret_cast<const std::byte*>(v.data()), v.size() * sizeof(float)};
}

const json* file_of(const json& snapshot, int mb) {
  for (const json& f : snapshot.at("files")) {
    if (f.at("mb").get<int>() == mb) return &f;
  }
  return nullptr;
}

}  // namespace

json write_hidden_snapshot(const fs::path& out, int layer, int mb0, const std::vector<std::vector<float>>& hidden) {
  std::error_code ec;
  fs::create_directories(out / hidden_snapshot_dir, ec);
  io_check(!ec, "cannot create '{}': {}", (out / hidden_snapshot_dir).string(), ec.message());
  json files = json::array();
  for (size_t i = 0; i < hidden.size(); ++i) {
    const int mb = mb0 + static_cast<int>(i);
    const std::string file = fmt::format("{}/L{:05d}-mb{:05d}.f32", hidden_snapshot_dir, layer, mb);
    const auto bytes = bytes_of(hidden[i]);
    write_file_atomic(out / file, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    files.push_back({{"mb", mb}, {"file", file}, {"sha256", sha256_hex(bytes)}});
  }
  return files;
}

std::vector<float> read_hidden_snapshot(const fs::path& out, const json& snapshot, int mb, size_t n_floats) {
  const json* f = file_of(snapshot, mb);
  if (!f) throw io_error(fmt::format("hidden-state snapshot of layer {} lacks micro-batch {}", snapshot.at("layer").get<int>(), mb));
  const fs::path path = out / f->at("file").get<std::string>();
  std::ifstream in(path, std::ios::binary);
  io_check(static_cast<bool>(in), "cannot read '{}'", path.string());
  std::vector<float> v(n_floats);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n_floats * sizeof(float)));
  io_check(in.gcount() == static_cast<std::streamsize>(n_floats * sizeof(float)) && in.peek() == EOF,
           "'{}' does not hold {} floats", path.string(), n_floats);
  io_check(sha256_hex(bytes_of(v)) == f->at("sha256").get<std::string>(), "'{}' does not match its sha256", path.string());
  return v;
}

bool hidden_snapshot_intact(const fs::path& out, const json& snapshot, int n_micro_batches) {
  try {
    for (int mb = 0; mb < n_micro_batches; ++mb) {
      const json* f = file_of(snapshot, mb);
      if (!f || sha256_file(out / f->at("file").get<std::string>()) != f->at("sha256").get<std::string>()) return false;
    }
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

void remove_hidden_snapshot(const fs::path& out, const json& snapshot) {
  std::error_code ec;
  for (const json& f : snapshot.at("files")) fs::remove(out / f.at("file").get<std::string>(), ec);
  if (fs::is_empty(out / hidden_snapshot_dir, ec) && !ec) fs::remove(out / hidden_snapshot_dir, ec);
}

SnapshotPolicy::SnapshotPolicy(int64_t bytes) : mode_(mode::automatic), write_seconds_(static_cast<double>(bytes) / assumed_bytes_per_second) {
  const char* env = std::getenv("SHARDQ_HIDDEN_SNAPSHOTS");
  const std::string m = env ? env : "auto";
  if (m == "every") {
    mode_ = mode::every;
  } else if (m == "off") {
    mode_ = mode::off;
  } else if (m != "auto" && !m.empty()) {
    throw spec_error("SHARDQ_HIDDEN_SNAPSHOTS", fmt::format("must be auto, every or off, got '{}'", m));
  }
}

bool SnapshotPolicy::due(double replay_seconds) const {
  switch (mode_) {
    case mode::every: return true;
    case mode::off: return false;
    case mode::automatic: return replay_seconds >= replay_to_write_ratio * write_seconds_;
  }
  return false;
}

}  // namespace shardq
