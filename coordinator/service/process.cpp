// Child processes of the coordinator service (see process.hpp).
#include "coordinator/service/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "common/error.hpp"
#include "common/unique_fd.hpp"

extern char** environ;

namespace shardq::service {
namespace fs = std::filesystem;

namespace {

struct ProcStat {
  char state = '?';
  pid_t ppid = 0;
  pid_t pgrp = 0;
  uint64_t start_time = 0;
};

// /proc/PID/stat: "pid (comm) state ppid ... starttime(22) ..."; comm may hold spaces and
// parentheses, so fields are counted from the last ')'.
std::optional<ProcStat> read_proc_stat(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string text;
  if (!in || !std::getline(in, text)) return std::nullopt;
  const auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(text.substr(close + 1));
  ProcStat s;
  std::string field;
  rest >> s.state >> s.ppid >> s.pgrp;
  for (int i = 6; i <= 21 && rest >> field; ++i) {
  }
  if (!(rest >> s.start_time)) return std::nullopt;
  return s;
}

// Every process /proc lists.
std::vector<pid_t> proc_pids() {
  std::vector<pid_t> pids;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos)
      pids.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return pids;
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// A NULL-terminated argv/envp view over owned strings.
std::vector<char*> c_array(std::vector<std::string>& items) {
  std::vector<char*> out;
  for (auto& s : items) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

std::vector<std::string> merged_environment(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string entry(*e);
    const auto eq = entry.find('=');
    if (eq != std::string::npos && extra.count(entry.substr(0, eq))) continue;
    env.push_back(entry);
  }
  for (const auto& [k, v] : extra) env.push_back(k + "=" + v);
  return env;
}

// Default signal dispositions and an empty mask in the child: the service's own handling
// of SIGINT/SIGTERM/SIGPIPE must not leak into jobs.
struct SpawnAttr {
  posix_spawnattr_t attr;
  explicit SpawnAttr(bool new_group) {
    posix_spawnattr_init(&attr);
    sigset_t defaults, empty;
    sigemptyset(&empty);
    sigemptyset(&defaults);
    for (int s : {SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGCHLD}) sigaddset(&defaults, s);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setsigmask(&attr, &empty);
    short flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
    if (new_group) {
      flags |= POSIX_SPAWN_SETPGROUP;
      posix_spawnattr_setpgroup(&attr, 0);
    }
    posix_spawnattr_setflags(&attr, flags);
  }
  ~SpawnAttr() { posix_spawnattr_destroy(&attr); }
};

struct FileActions {
  posix_spawn_file_actions_t actions;
  FileActions() { posix_spawn_file_actions_init(&actions); }
  ~FileActions() { posix_spawn_file_actions_destroy(&actions); }
};

}  // namespace

std::optional<uint64_t> process_start_time(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  const auto s = read_proc_stat(pid);
  if (!s || s->state == 'Z' || s->state == 'X') return std::nullopt;
  return s->start_time;
}

bool process_alive(pid_t pid, uint64_t start_time) {
  const auto t = process_start_time(pid);
  return t && *t == start_time;
}

std::vector<pid_t> process_descendants(pid_t root) {
  std::map<pid_t, std::vector<pid_t>> children;
  for (const pid_t pid : proc_pids())
    if (const auto s = read_proc_stat(pid); s && s->state != 'Z') children[s->ppid].push_back(pid);
  std::vector<pid_t> out, stack{root};
  while (!stack.empty()) {
    const pid_t p = stack.back();
    stack.pop_back();
    for (pid_t c : children[p]) {
      out.push_back(c);
      stack.push_back(c);
    }
  }
  return out;
}

std::vector<pid_t> process_group_leaders_with_env(const std::string& name, const std::string& value) {
  const std::string wanted = name + "=" + value;
  std::vector<pid_t> out;
  for (const pid_t pid : proc_pids()) {
    const auto s = read_proc_stat(pid);
    if (!s || s->pgrp != pid || s->state == 'Z') continue;
    std::ifstream in(fmt::format("/proc/{}/environ", pid), std::ios::binary);
    for (std::string entry; std::getline(in, entry, '\0');) {
      if (entry == wanted) {
        out.push_back(pid);
        break;
      }
    }
  }
  return out;
}

std::vector<std::string> process_cmdline(pid_t pid) {
  std::vector<std::string> argv;
  std::ifstream in(fmt::format("/proc/{}/cmdline", pid), std::ios::binary);
  for (std::string arg; std::getline(in, arg, '\0');) argv.push_back(arg);
  return argv;
}

std::vector<pid_t> processes_with_args(const std::vector<std::string>& args) {
  std::vector<pid_t> out;
  for (const pid_t pid : proc_pids()) {
    const auto s = read_proc_stat(pid);
    if (!s || s->state == 'Z') continue;
    const std::vector<std::string> argv = process_cmdline(pid);
    const auto holds = [&](const std::string& a) { return std::find(argv.begin(), argv.end(), a) != argv.end(); };
    if (!argv.empty() && std::all_of(args.begin(), args.end(), holds)) out.push_back(pid);
  }
  return out;
}

pid_t spawn_process_group(const std::vector<std::string>& argv_in, const fs::path& log_file,
                          const std::map<std::string, std::string>& env_extra) {
  if (argv_in.empty()) throw io_error("spawn: empty command");
  std::vector<std::string> argv = argv_in;
  std::vector<std::string> env = merged_environment(env_extra);
  auto c_argv = c_array(argv);
  auto c_env = c_array(env);
  SpawnAttr attr(true);
  FileActions fa;
  const std::string log = log_file.string();
  posix_spawn_file_actions_addopen(&fa.actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa.actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa.actions, 1, 2);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, c_argv[0], &fa.actions, &attr.attr, c_argv.data(), c_env.data());
  if (rc != 0) throw io_error(fmt::format("cannot start '{}': {}", argv_in[0], std::strerror(rc)));
  return pid;
}

std::optional<int> reap_child(pid_t pid) {
  int status = 0;
  const pid_t r = ::waitpid(pid, &status, WNOHANG);
  if (r == pid) return exit_code_of(status);
  return std::nullopt;
}

CommandOutput run_command_capture(const std::vector<std::string>& argv_in, std::chrono::milliseconds timeout) {
  CommandOutput result;
  if (argv_in.empty()) return result;
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return result;
  UniqueFd out_r{out_pipe[0]}, out_w{out_pipe[1]};
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return result;
  UniqueFd err_r{err_pipe[0]}, err_w{err_pipe[1]};
  std::vector<std::string> argv = argv_in;
  auto c_argv = c_array(argv);
  SpawnAttr attr(false);
  FileActions fa;
  posix_spawn_file_actions_addopen(&fa.actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa.actions, out_w.get(), 1);
  posix_spawn_file_actions_adddup2(&fa.actions, err_w.get(), 2);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, c_argv[0], &fa.actions, &attr.attr, c_argv.data(), environ);
  if (rc != 0) {
    result.err = fmt::format("cannot start '{}': {}", argv_in[0], std::strerror(rc));
    return result;
  }
  out_w.reset();
  err_w.reset();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool out_open = true, err_open = true;
  char buf[4096];
  while (out_open || err_open) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd fds[2] = {{out_open ? out_r.get() : -1, POLLIN, 0}, {err_open ? err_r.get() : -1, POLLIN, 0}};
    if (::poll(fds, 2, static_cast<int>(left.count())) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) (i == 0 ? result.out : result.err).append(buf, static_cast<size_t>(n));
      else (i == 0 ? out_open : err_open) = false;
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = exit_code_of(status);
  return result;
}

}  // namespace shardq::service
