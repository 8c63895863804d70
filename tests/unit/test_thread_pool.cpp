// The worker threads (common/thread_pool.hpp): every task runs exactly once for any thread
// count, a task's exception reaches the caller, a nested call runs inline, and runs keep
// completing while set_worker_threads restarts the workers between them (a worker made after
// earlier runs once took the last finished run for a new one and left the caller waiting
// forever: a hang, so that test watches the clock and ends the process if it stops).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <stdexcept>
#include <thread>
#include <vector>

#include "common/thread_pool.hpp"

namespace shardq {
namespace {

struct ThreadsGuard {
  int saved = worker_threads();
  ~ThreadsGuard() { set_worker_threads(saved); }
};

TEST(ThreadPool, EveryTaskRunsOnceForAnyThreadCount) {
  ThreadsGuard guard;
  for (int threads : {1, 2, 3, 8}) {
    set_worker_threads(threads);
    for (int n : {0, 1, 2, 7, 64, 1000}) {
      std::vector<std::atomic<int>> runs(static_cast<size_t>(n));
      parallel_for(n, [&](int i) { runs[static_cast<size_t>(i)].fetch_add(1); });
      int wrong = 0;
      for (auto& r : runs) wrong += r.load() != 1;
      EXPECT_EQ(wrong, 0) << threads << " threads, " << n << " tasks";
    }
  }
}

TEST(ThreadPool, ATasksExceptionReachesTheCallerAndThePoolStaysUsable) {
  ThreadsGuard guard;
  set_worker_threads(4);
  EXPECT_THROW(parallel_for(100, [](int i) { if (i == 37) throw std::runtime_error("task 37"); }), std::runtime_error);
  std::atomic<int> sum{0};
  parallel_for(100, [&](int i) { sum += i; });
  EXPECT_EQ(sum.load(), 4950);
}

TEST(ThreadPool, NestedCallsRunInline) {
  ThreadsGuard guard;
  set_worker_threads(3);
  std::atomic<int> inner{0};
  parallel_for(6, [&](int) { parallel_for(5, [&](int) { inner.fetch_add(1); }); });
  EXPECT_EQ(inner.load(), 30);
}

TEST(ThreadPool, RunsCompleteWhileTheWorkersAreRestartedBetweenThem) {
  ThreadsGuard guard;
  auto stress = std::async(std::launch::async, [] {
    long long wrong = 0;
    for (int round = 0; round < 3000; ++round) {
      set_worker_threads(2 + round % 4);  // stops the workers; the next run makes new ones
      for (int rep = 0; rep < 3; ++rep) {
        std::atomic<int> count{0};
        parallel_for(16, [&](int) { count.fetch_add(1); });
        wrong += count.load() != 16;
      }
    }
    return wrong;
  });
  if (stress.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    // A stuck parallel_for cannot be cancelled, and the pool's destructor would wait for it.
    std::fprintf(stderr, "ThreadPool.RunsCompleteWhileTheWorkersAreRestartedBetweenThem: parallel_for hung\n");
    std::_Exit(1);
  }
  EXPECT_EQ(stress.get(), 0);
}

}  // namespace
}  // namespace shardq
