// The resume journal and checkpoint verification: entries read back as written; a line cut
// short by a crash is ignored and cut off before the next append; a damaged complete line is
// an error naming the line; a later entry for a shard replaces the earlier one; verification
// finds damaged, deleted and never-committed shards and names their layers.
#include <gtest/gtest.h>

#include <fstream>

#include "common/checkpoint_journal.hpp"
#include "common/checkpoint_verify.hpp"
#include "common/error.hpp"
#include "common/sha256.hpp"
#include "support/test_support.hpp"

namespace shardq {
namespace {

using nlohmann::json;
using test::TempDir;

const json identity_of_test = {{"spec", {{"quant", {{"bits", 4}}}}},
                               {"num_layers", 2},
                               {"shard_layers", json::array({json::array({0}), json::array({1}), json::array()})}};

// A "shard" file with arbitrary bytes and its journal entry.
JournalShard make_shard(const std::filesystem::path& dir, int index, std::vector<int> layers, const std::string& bytes) {
  const std::string file = "shard-0000" + std::to_string(index) + ".h5";
  std::ofstream(dir / file, std::ios::binary) << bytes;
  JournalShard s;
  s.index = index;
  s.file = file;
  s.sha256 = sha256_file(dir / file);
  s.bytes = static_cast<int64_t>(bytes.size());
  s.layers = std::move(layers);
  s.records = {{"layers", json::array({{{"index", index}, {"lim", 0.25 * index}}})}};
  return s;
}

void append_raw(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::app) << text;
}

TEST(Journal, EntriesReadBackAsWritten) {
  TempDir dir;
  const JournalShard a = make_shard(dir.path(), 0, {0}, "layer zero");
  const JournalShard b = make_shard(dir.path(), 2, {}, "embedding and head");
  {
    JournalWriter w = JournalWriter::create(dir.path(), identity_of_test);
    w.append_shard(a);
    w.append_measure({{"allocation", {{"x", 1.5}}}});
    w.append_shard(b);
  }
  const Journal j = journal_read(dir.path());
  EXPECT_EQ(j.identity, identity_of_test);
  ASSERT_EQ(j.shards.size(), 2u);
  EXPECT_EQ(journal_shard_to_json(j.shards.at(0)), journal_shard_to_json(a));
  EXPECT_EQ(journal_shard_to_json(j.shards.at(2)), journal_shard_to_json(b));
  ASSERT_TRUE(j.measure.has_value());
  EXPECT_EQ(j.measure->at("allocation").at("x").get<double>(), 1.5);
  EXPECT_FALSE(j.torn_tail);
  EXPECT_EQ(j.valid_bytes, static_cast<int64_t>(std::filesystem::file_size(dir / journal_file_name)));
}

TEST(Journal, TornLastLineIsIgnoredAndCutBeforeTheNextAppend) {
  TempDir dir;
  const JournalShard a = make_shard(dir.path(), 0, {0}, "zero");
  const JournalShard b = make_shard(dir.path(), 1, {1}, "one");
  {
    JournalWriter w = JournalWriter::create(dir.path(), identity_of_test);
    w.append_shard(a);
  }
  const auto intact = std::filesystem::file_size(dir / journal_file_name);
  append_raw(dir / journal_file_name, R"({"entry":{"shard":{"index":1,"file":"shard-00001.h5")");  // no newline
  Journal j = journal_read(dir.path());
  EXPECT_TRUE(j.torn_tail);
  EXPECT_EQ(j.shards.size(), 1u);
  EXPECT_EQ(j.valid_bytes, static_cast<int64_t>(intact));
  {
    JournalWriter w = JournalWriter::resume(dir.path(), j);
    w.append_shard(b);
  }
  j = journal_read(dir.path());
  EXPECT_FALSE(j.torn_tail);
  ASSERT_EQ(j.shards.size(), 2u);
  EXPECT_EQ(j.shards.at(1).sha256, b.sha256);
}

TEST(Journal, DamagedCompleteLineIsAnErrorNamingTheLine) {
  TempDir dir;
  {
    JournalWriter w = JournalWriter::create(dir.path(), identity_of_test);
    w.append_shard(make_shard(dir.path(), 0, {0}, "zero"));
    w.append_shard(make_shard(dir.path(), 1, {1}, "one"));
  }
  std::string text = test::read_text(dir / journal_file_name);
  const auto at = text.find("\"lim\":0.25");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 10, "\"lim\":0.75");  // still valid JSON, different content
  std::ofstream(dir / journal_file_name, std::ios::binary | std::ios::trunc) << text;
  try {
    journal_read(dir.path());
    FAIL() << "a damaged line was accepted";
  } catch (const io_error& e) {
    EXPECT_NE(std::string(e.what()).find("line 3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
  }
  std::ofstream(dir / journal_file_name, std::ios::binary | std::ios::trunc) << "not json\n";
  EXPECT_THROW(journal_read(dir.path()), io_error);
}

TEST(Journal, LaterEntryForAShardReplacesTheEarlierOne) {
  TempDir dir;
  JournalWriter w = JournalWriter::create(dir.path(), identity_of_test);
  w.append_shard(make_shard(dir.path(), 1, {1}, "first attempt"));
  const JournalShard redo = make_shard(dir.path(), 1, {1}, "redone");
  w.append_shard(redo);
  const Journal j = journal_read(dir.path());
  ASSERT_EQ(j.shards.size(), 1u);
  EXPECT_EQ(j.shards.at(1).sha256, redo.sha256);
}

TEST(Journal, EntryNamingAPathOutsideTheDirectoryIsRefused) {
  JournalShard s;
  s.file = "../elsewhere.h5";
  EXPECT_THROW(journal_shard_from_json(journal_shard_to_json(s), "test"), io_error);
}

TEST(Journal, HiddenStateFilesOutsideTheDirectoryAreRefused) {
  // A line with a valid checksum (anyone can compute it) naming a file a later --force or a
  // finished job would remove: the journal is refused instead of followed.
  for (const char* file : {"../victim.txt", "/etc/victim", "hidden/../../victim", "hidden//x", ""}) {
    TempDir dir;
    JournalWriter::create(dir.path(), identity_of_test);
    const json entry = {{"hidden", {{"layer", 1}, {"files", json::array({{{"mb", 0}, {"file", file}, {"sha256", "00"}}})}}}};
    append_raw(dir / journal_file_name, json{{"entry", entry}, {"sha256", sha256_hex(entry.dump())}}.dump() + "\n");
    EXPECT_THROW(journal_read(dir.path()), io_error) << file;
  }
  TempDir dir;
  JournalWriter w = JournalWriter::create(dir.path(), identity_of_test);
  w.append_hidden({{"layer", 1}, {"files", json::array({{{"mb", 0}, {"file", "hidden/L00001-mb00000.f32"}, {"sha256", "00"}}})}});
  EXPECT_EQ(journal_read(dir.path()).hidden.count(1), 1u);
}

TEST(CommitRecord, ReadsBackOnlyForTheJobAndFileItNames) {
  TempDir dir;
  const JournalShard s = make_shard(dir.path(), 1, {1}, "layer one");
  commit_record_write(dir.path(), s, "identity-a");
  EXPECT_TRUE(std::filesystem::is_regular_file(dir / "shard-00001.h5.commit.json"));
  const std::optional<JournalShard> back = commit_record_read(dir.path(), s.file, "identity-a");
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(journal_shard_to_json(*back), journal_shard_to_json(s));
  // Another job's record, or a record read for another file: the shard is not this job's.
  EXPECT_FALSE(commit_record_read(dir.path(), s.file, "identity-b").has_value());
  std::filesystem::copy_file(dir / "shard-00001.h5.commit.json", dir / "shard-00002.h5.commit.json");
  EXPECT_FALSE(commit_record_read(dir.path(), "shard-00002.h5", "identity-a").has_value());
  EXPECT_FALSE(commit_record_read(dir.path(), "shard-00003.h5", "identity-a").has_value());  // no record
  commit_record_remove(dir.path(), s.file);
  commit_record_remove(dir.path(), s.file);  // already gone: nothing to do
  EXPECT_FALSE(commit_record_read(dir.path(), s.file, "identity-a").has_value());
}

TEST(CommitRecord, DamagedOrForeignRecordIsNotTrusted) {
  TempDir dir;
  const JournalShard s = make_shard(dir.path(), 1, {1}, "layer one");
  commit_record_write(dir.path(), s, "identity-a");
  const std::filesystem::path record = dir / "shard-00001.h5.commit.json";
  std::string text;
  {
    std::ifstream in(record);
    std::getline(in, text);
  }
  for (const std::string& bad : {text.substr(0, text.size() / 2), std::string("[1, 2]"), std::string("{\"shard\": 5}"),
                                 std::string("{\"identity_sha256\": 7, \"shard\": {}}"),
                                 json{{"identity_sha256", "identity-a"}, {"shard", {{"index", 1}}}}.dump()}) {
    std::ofstream(record, std::ios::trunc) << bad;
    EXPECT_FALSE(commit_record_read(dir.path(), s.file, "identity-a").has_value()) << bad;
  }
}

TEST(CheckpointVerify, FindsDamagedDeletedAndUncommittedShards) {
  TempDir dir;
  {
    JournalWriter w = JournalWriter::create(dir.path(), identity_of_test);
    w.append_shard(make_shard(dir.path(), 0, {0}, "layer zero bytes"));
    w.append_shard(make_shard(dir.path(), 2, {}, "embedding bytes"));
  }
  VerifyReport r = checkpoint_verify(dir.path());
  EXPECT_FALSE(r.has_manifest);
  EXPECT_EQ(r.num_layers, 2);
  EXPECT_EQ(r.layers_missing, std::vector<int>{1});  // shard 1 never committed
  EXPECT_TRUE(r.layers_bad.empty());
  EXPECT_FALSE(r.ok());

  // One flipped byte in shard 0.
  std::string bytes = test::read_text(dir / "shard-00000.h5");
  bytes[3] ^= 0x01;
  std::ofstream(dir / "shard-00000.h5", std::ios::binary | std::ios::trunc) << bytes;
  r = checkpoint_verify(dir.path());
  EXPECT_EQ(r.layers_bad, std::vector<int>{0});
  ASSERT_EQ(r.shards.size(), 3u);
  EXPECT_EQ(r.shards[0].state, shard_state::bad);
  EXPECT_NE(r.shards[0].detail.find("sha256"), std::string::npos);
  EXPECT_EQ(r.shards[2].state, shard_state::ok);

  std::filesystem::remove(dir / "shard-00002.h5");
  r = checkpoint_verify(dir.path());
  EXPECT_EQ(r.shards[2].state, shard_state::missing);
  EXPECT_EQ(r.to_json().at("ok"), false);
}

TEST(CheckpointVerify, DirectoryWithoutJournalOrManifestIsAnError) {
  TempDir dir;
  EXPECT_THROW(checkpoint_verify(dir.path()), io_error);
}

}  // namespace
}  // namespace shardq
