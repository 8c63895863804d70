#include "common/thread_pool.hpp"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace shardq {
namespace {

thread_local bool inside_task = false;

int default_threads() {
  for (const char* var : {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"}) {
    const char* v = std::getenv(var);
    if (v && std::atoi(v) > 0) return std::atoi(v);
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

class Pool {
 public:
  Pool() : threads_(default_threads()) {}
  ~Pool() { stop_workers(); }

  int threads() const { return threads_; }

  void set_threads(int n) {
    std::lock_guard run_lock(run_mutex_);
    stop_workers();
    threads_ = std::max(1, n);
  }

  void run(int n, const std::function<void(int)>& task) {
    if (n <= 0) return;
    if (n == 1 || threads_ == 1 || inside_task) {
      for (int i = 0; i < n; ++i) task(i);
      return;
    }
    std::lock_guard run_lock(run_mutex_);  // one parallel call at a time
    start_workers();
    {
      std::lock_guard lock(mutex_);
      task_ = &task;
      n_tasks_ = n;
      next_.store(0);
      busy_ = static_cast<int>(workers_.size());
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    work();
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return busy_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void work() {
    inside_task = true;
    for (int i = next_.fetch_add(1); i < n_tasks_; i = next_.fetch_add(1)) {
      try {
        (*task_)(i);
      } catch (...) {
        std::lock_guard lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
    }
    inside_task = false;
  }

  // `seen` starts at the generation current when the worker is made: a worker made after
  // earlier runs (set_threads restarts them) would otherwise take the last finished run for a
  // new one, decrement busy_ once too often, and leave run() waiting for a busy_ == 0 it has
  // already passed (a hang seen in TiledBlas.GemmMatches... under ctest -j2).
  void worker_loop(uint64_t seen) {
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
      }
      work();
      std::lock_guard lock(mutex_);
      if (--busy_ == 0) done_.notify_one();
    }
  }

  void start_workers() {
    if (!workers_.empty()) return;
    uint64_t generation = 0;
    {
      std::lock_guard lock(mutex_);
      stopping_ = false;
      generation = generation_;
    }
    for (int t = 1; t < threads_; ++t) workers_.emplace_back([this, generation] { worker_loop(generation); });
  }

  void stop_workers() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  int threads_ = 1;
  std::mutex run_mutex_, mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* task_ = nullptr;
  int n_tasks_ = 0;
  std::atomic<int> next_{0};
  int busy_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

int worker_threads() { return pool().threads(); }
void set_worker_threads(int n) { pool().set_threads(n); }
void parallel_for(int n, const std::function<void(int)>& task) { pool().run(n, task); }

}  // namespace shardq
