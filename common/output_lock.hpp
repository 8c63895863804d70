// One writer per checkpoint directory. Rank 0 of a job holds an exclusive lock on
// OUTPUT/.shardq-lock from before it reads what an earlier run left (resume) until the job
// ends, so a second job on the same output (a user's second mpirun, a --force over a running
// job, or a launch the REST coordinator repeated after a crash) stops with one line naming
// the first instead of interleaving its files with the running one's.
//
// The lock is an open-file-description lock (fcntl F_OFD_SETLK, Linux >= 3.15): the kernel
// drops it when the holder's process ends however it ends, SIGKILL included, so an
// interrupted job leaves nothing for --resume to clear; NFS carries fcntl locks to its
// server, so jobs on two nodes of a cluster see each other. The file itself stays: removing
// it would let a third job lock a new file while a second still waits on the old one.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "common/unique_fd.hpp"

namespace shardq {

inline constexpr std::string_view output_lock_file_name = ".shardq-lock";

// Whether `dir` holds anything besides the lock file: a job that stopped right after taking
// the lock wrote nothing. False for a directory that does not exist or cannot be listed.
bool output_has_files(const std::filesystem::path& dir);

// Whether another process holds the lock on `output_dir` now: who (pid, host, start time as
// the holder wrote them; empty if it has not yet), or nullopt when nobody does. A probe only,
// for the REST coordinator to answer 409 instead of launching a job that would stop at once;
// the job itself still takes the lock.
std::optional<std::string> output_lock_holder(const std::filesystem::path& output_dir);

// "'DIR' is being written by another shardq job (HOLDER); ..." as OutputLock and the
// coordinator say it.
std::string output_busy_message(const std::filesystem::path& output_dir, const std::string& holder);

class OutputLock {
 public:
  // Creates `output_dir` if it does not exist, then takes the lock without waiting. Throws
  // spec_error("output") naming the holder (pid, host, start time) when another job holds it,
  // io_error when the directory or file cannot be made. Where the filesystem refuses fcntl
  // locks (ENOSYS, ENOLCK, EOPNOTSUPP, EINVAL) it logs one warning and holds nothing.
  // Moved, not copied; released when the last owner goes (closing the only descriptor of
  // the open file description drops its lock).
  explicit OutputLock(const std::filesystem::path& output_dir);

 private:
  UniqueFd file_;
};

}  // namespace shardq
