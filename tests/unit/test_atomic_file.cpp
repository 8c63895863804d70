// Atomic publication (common/atomic_file.hpp): a file appears whole under its name or not at
// all, and its temporary name is claimed afresh, so that a symlink in its place (left by
// someone, in a shared directory) is replaced rather than followed and its target truncated.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "common/atomic_file.hpp"
#include "common/checkpoint.hpp"
#include "support/test_support.hpp"

namespace shardq {
namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(AtomicFile, WritesWholeAndLeavesNoTemporary) {
  test::TempDir dir;
  const fs::path path = dir / "manifest.json";
  write_file_atomic(path, "first\n");
  write_file_atomic(path, "second\n");
  EXPECT_EQ(read_text(path), "second\n");
  EXPECT_FALSE(fs::exists(temp_path_for(path)));
}

TEST(AtomicFile, ASymlinkInTheTemporaryPlaceIsReplacedNotFollowed) {
  test::TempDir dir;
  std::ofstream(dir / "notes.txt") << "mine\n";
  const fs::path path = dir / "out" / "manifest.json", shard = dir / "out" / "shard-00000.h5";
  fs::create_directories(path.parent_path());
  fs::create_symlink(dir / "notes.txt", temp_path_for(path));
  fs::create_symlink(dir / "notes.txt", temp_path_for(shard));
  write_file_atomic(path, "{}\n");
  ShardWriter writer(shard);
  writer.close();
  EXPECT_EQ(read_text(dir / "notes.txt"), "mine\n");
  EXPECT_EQ(read_text(path), "{}\n");
  EXPECT_FALSE(fs::is_symlink(path));
  EXPECT_TRUE(fs::is_regular_file(shard));
  EXPECT_FALSE(fs::is_symlink(shard));
  EXPECT_FALSE(fs::exists(fs::symlink_status(temp_path_for(path))));
}

}  // namespace
}  // namespace shardq
