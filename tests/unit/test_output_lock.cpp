// One writer per checkpoint directory (common/output_lock.hpp): a second lock on the same
// output is refused with a message naming the holder, and the lock ends with its holder —
// also when the holder is SIGKILLed, which is what lets --resume start without clearing it.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <optional>

#include "common/error.hpp"
#include "common/job_spec.hpp"
#include "common/output_lock.hpp"
#include "support/test_support.hpp"

namespace shardq {
namespace {

namespace fs = std::filesystem;

std::string refusal(const fs::path& output) {
  try {
    OutputLock second(output);
  } catch (const spec_error& e) {
    EXPECT_EQ(e.field(), "output");
    return e.message();
  }
  return "<locked>";
}

TEST(OutputLock, SecondWriterIsRefusedUntilTheFirstEnds) {
  test::TempDir dir;
  const fs::path output = dir / "nested" / "out";
  std::optional<OutputLock> first(std::in_place, output);
  EXPECT_TRUE(fs::is_directory(output));
  const std::string message = refusal(output);
  EXPECT_NE(message.find("is being written by another shardq job"), std::string::npos) << message;
  EXPECT_NE(message.find("pid " + std::to_string(::getpid()) + " on host "), std::string::npos) << message;
  EXPECT_NE(message.find(output.string()), std::string::npos) << message;
  // The coordinator's probe sees the same holder, and takes nothing.
  const std::optional<std::string> holder = output_lock_holder(output);
  ASSERT_TRUE(holder.has_value());
  EXPECT_EQ(output_busy_message(output, *holder), message);

  OutputLock moved = std::move(*first);
  first.reset();  // the moved-from lock holds nothing
  EXPECT_NE(refusal(output), "<locked>");
  { OutputLock gone = std::move(moved); }
  EXPECT_EQ(refusal(output), "<locked>");
  EXPECT_FALSE(output_lock_holder(output).has_value());         // the file stays, unlocked
  EXPECT_FALSE(output_lock_holder(dir / "nothing").has_value());  // no lock file at all
}

TEST(OutputLock, EndsWhenItsHolderIsKilled) {
  test::TempDir dir;
  const fs::path output = dir / "out";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    OutputLock held(output);
    const char byte = 1;
    [[maybe_unused]] const ssize_t n = ::write(ready[1], &byte, 1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  ::close(ready[0]);
  const std::string message = refusal(output);
  EXPECT_NE(message.find("pid " + std::to_string(child) + " "), std::string::npos) << message;
  ::kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_EQ(refusal(output), "<locked>");
}

// A symlink or a FIFO in the lock file's place is a user's, not ours: refused with the path,
// what the symlink names left as it was, and no wait on the FIFO.
TEST(OutputLock, RefusesALockFileThatIsNotARegularFile) {
  test::TempDir dir;
  const fs::path link_out = dir / "link_out", fifo_out = dir / "fifo_out";
  fs::create_directories(link_out);
  fs::create_directories(fifo_out);
  std::ofstream(dir / "notes.txt") << "mine";
  fs::create_symlink(dir / "notes.txt", link_out / std::string(output_lock_file_name));
  ASSERT_EQ(::mkfifo((fifo_out / std::string(output_lock_file_name)).c_str(), 0644), 0);
  for (const fs::path& out : {link_out, fifo_out}) {
    try {
      OutputLock lock(out);
      ADD_FAILURE() << "locked " << out;
    } catch (const io_error& e) {
      EXPECT_NE(std::string(e.what()).find((out / std::string(output_lock_file_name)).string()), std::string::npos) << e.what();
    }
    EXPECT_FALSE(output_lock_holder(out).has_value());
  }
  std::ifstream in(dir / "notes.txt");
  std::string text;
  std::getline(in, text);
  EXPECT_EQ(text, "mine");
}

TEST(OutputLock, TheLockFileIsNotOutput) {
  test::TempDir dir;
  fs::create_directories(dir / "model");
  std::ofstream(dir / "model" / "config.json") << "{}";
  const JobSpec s = job_spec_from_json({{"model", (dir / "model").string()}, {"output", (dir / "out").string()}});
  { OutputLock lock(s.output); }
  EXPECT_NO_THROW(job_spec_check_paths(s, false));  // only the lock file is there
  std::ofstream(dir / "out" / "shard-00000.h5") << "x";
  EXPECT_THROW(job_spec_check_paths(s, false), spec_error);
}

}  // namespace
}  // namespace shardq
