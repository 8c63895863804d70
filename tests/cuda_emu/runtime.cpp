// Host CUDA emulator, runtime side: device memory, streams, events, the device's description,
// and the kernel scheduler of shardq_cuda_emu/device.hpp.
//
// What it checks that a GPU would (or compute-sanitizer would) report:
// - device memory sits between two inaccessible pages, at the end of its pages, and starts out
//   filled with 0xff bytes (NaN as float, -1 as an integer) as uninitialised memory may hold
//   anything: a kernel or copy running past the end, or before the start, stops with a line
//   naming the allocation, the kernel and the thread; a result that read memory nobody wrote
//   shows as NaN or -1;
// - copies stay inside one allocation and go the direction they say;
// - a kernel's pointer arguments are device (or pinned host) memory or null;
// - launch shapes within the limits of an H100 (1024 threads a block, 48 KiB dynamic shared
//   memory unless cudaFuncSetAttribute raised it, 227 KiB at most);
// - a block whose threads wait at __syncthreads or a shuffle that not all of them reach.
// What it does not: streams run in issue order, synchronously, so a missing
// cudaStreamSynchronize or event wait goes unnoticed; threads of a block run one at a time, so
// only races that the fiber schedule exposes show.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/context/fiber.hpp>
#include <boost/context/stack_context.hpp>

#include "cuda_runtime_api.h"
#include "emu_state.hpp"

struct CUstream_st {};
struct CUevent_st {
  std::chrono::steady_clock::time_point at;
};

namespace shardq_emu {

thread_local uint3 thread_idx, block_idx;
thread_local dim3 block_dim, grid_dim;

namespace {

constexpr std::size_t h100_dynamic_shared_default = 48 * 1024;
constexpr int h100_dynamic_shared_optin = 232448;  // 227 KiB (cudaDevAttrMaxSharedMemoryPerBlockOptin)
constexpr int h100_sm_count = 132;

std::mutex& state_mutex() {
  static std::mutex m;
  return m;
}

struct Allocation {
  const char* start;  // the pointer handed out
  char* region;  // mmap'ed: guard page, data pages, guard page
  std::size_t region_bytes;
  std::size_t bytes;  // as asked
  bool pinned_host;
};
// By start address (the pointer handed out).
std::map<const char*, Allocation>& allocations() {
  static std::map<const char*, Allocation> m;
  return m;
}
std::set<const CUstream_st*>& streams() {
  static std::set<const CUstream_st*> s;
  return s;
}
std::unordered_map<const void*, int>& dynamic_shared_limits() {
  static std::unordered_map<const void*, int> m;
  return m;
}

thread_local cudaError_t last_error = cudaSuccess;

std::size_t page_size() {
  static const std::size_t p = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

}  // namespace

cudaError_t fail(cudaError_t e) {
  last_error = e;
  return e;
}

[[noreturn]] void fatal(const std::string& message) {
  std::fprintf(stderr, "cuda_emu: %s\n", message.c_str());
  std::fflush(stderr);
  std::abort();
}

namespace {

const Allocation* find_allocation_locked(const void* p) {
  const auto& m = allocations();
  auto it = m.upper_bound(static_cast<const char*>(p));
  if (it == m.begin()) return nullptr;
  --it;
  const char* base = it->first;
  const char* q = static_cast<const char*>(p);
  return q <= base + it->second.bytes ? &it->second : nullptr;
}

}  // namespace

// Whether [p, p + bytes) lies in one allocation; `device_only` refuses pinned host memory.
bool in_allocation(const void* p, std::size_t bytes, bool device_only) {
  std::lock_guard lock(state_mutex());
  const Allocation* a = find_allocation_locked(p);
  if (!a || (device_only && a->pinned_host)) return false;
  return static_cast<const char*>(p) + bytes <= a->start + a->bytes;
}

namespace {

void* allocate(std::size_t bytes, bool pinned_host) {
  const std::size_t page = page_size();
  const std::size_t data_pages = (std::max<std::size_t>(bytes, 1) + page - 1) / page;
  const std::size_t region_bytes = (data_pages + 2) * page;
  void* region = mmap(nullptr, region_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (region == MAP_FAILED) return nullptr;
  char* data_start = static_cast<char*>(region) + page;
  if (mprotect(data_start, data_pages * page, PROT_READ | PROT_WRITE) != 0) {
    munmap(region, region_bytes);
    return nullptr;
  }
  // The data ends at the trailing guard page, rounded down to cudaMalloc's 256-byte alignment;
  // an overrun by more than the rounding faults.
  const std::size_t rounded = (bytes + 255) / 256 * 256;
  char* data_end = data_start + data_pages * page;
  char* p = data_end - std::min(rounded, data_pages * page);
  std::memset(p, pinned_host ? 0 : 0xff, bytes);
  std::lock_guard lock(state_mutex());
  allocations()[p] = Allocation{p, static_cast<char*>(region), region_bytes, bytes, pinned_host};
  return p;
}

cudaError_t release(void* p, bool pinned_host) {
  if (!p) return cudaSuccess;
  std::lock_guard lock(state_mutex());
  auto it = allocations().find(static_cast<const char*>(p));
  if (it == allocations().end() || it->second.pinned_host != pinned_host) return fail(cudaErrorInvalidValue);
  munmap(it->second.region, it->second.region_bytes);
  allocations().erase(it);
  return cudaSuccess;
}

bool stream_valid(cudaStream_t s) {
  if (s == nullptr) return true;
  std::lock_guard lock(state_mutex());
  return streams().count(s) != 0;
}

cudaError_t copy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  const bool dst_dev = in_allocation(dst, bytes, true), src_dev = in_allocation(src, bytes, true);
  const bool dst_any = in_allocation(dst, bytes, false), src_any = in_allocation(src, bytes, false);
  bool ok = true;
  switch (kind) {
    case cudaMemcpyHostToDevice: ok = dst_dev && !src_dev; break;
    case cudaMemcpyDeviceToHost: ok = src_dev && !dst_dev; break;
    case cudaMemcpyDeviceToDevice: ok = src_dev && dst_dev; break;
    case cudaMemcpyHostToHost: ok = !src_dev && !dst_dev; break;
    case cudaMemcpyDefault: break;
    default: return fail(cudaErrorInvalidMemcpyDirection);
  }
  // A device-side pointer whose range leaves its allocation is no device memory of any kind.
  const auto straddles = [&](const void* p) {
    std::lock_guard lock(state_mutex());
    return find_allocation_locked(p) != nullptr;
  };
  if ((!dst_any && straddles(dst)) || (!src_any && straddles(src))) return fail(cudaErrorInvalidValue);
  if (!ok) return fail(cudaErrorInvalidValue);
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}

}  // namespace

// ---- the kernel scheduler ---------------------------------------------------------------------

namespace {

constexpr std::size_t fiber_stack_bytes = 128 * 1024;

enum class Wait { none, block, warp, done };

namespace bctx = boost::context;

struct Fiber {
  bctx::fiber self;    // where the thread stopped (empty while it runs and once it ends)
  bctx::fiber caller;  // the scheduler, while the thread runs
  std::unique_ptr<char[]> stack;  // fiber_stack_bytes, uninitialised, reused block after block
  unsigned linear = 0;
  uint3 idx{};
  Wait wait = Wait::none;
  uint64_t gen = 0;
};

struct Warp {
  unsigned live = 0, arrived = 0;
  uint64_t gen = 0;
  unsigned char slots[2][32][8];  // by generation parity, so a lane that moves on cannot overwrite a value still to be read
};

struct Scheduler {
  explicit Scheduler(std::vector<Fiber>& pool) : fibers(pool) {}
  const char* kernel = nullptr;  // its name
  void (*body)(void*) = nullptr;
  void* arg = nullptr;
  std::vector<Fiber>& fibers;
  Fiber* current = nullptr;
  unsigned block_live = 0, block_arrived = 0;
  uint64_t block_gen = 0;
  std::vector<Warp> warps;
  bool direct = false;   // threads run as plain calls: the kernel has never synchronised
  bool synced = false;   // a thread of this launch reached a barrier or a shuffle
  // Every other launch runs blocks, and a block's threads between barriers, last first: a
  // thread that reads what another writes without a barrier between them then reads too
  // early in one order or the other.
  bool reversed = false;
  std::vector<unsigned char> dynamic_shared;
};

thread_local Scheduler* running = nullptr;

// Kernels seen to run without reaching a barrier or shuffle: later launches run their threads
// as plain calls, thousands of times faster than fibers.
std::set<const void*>& kernels_without_sync() {
  static std::set<const void*> s;
  return s;
}
std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}
// Under launch_mutex: the fibers of the largest block so far, their stacks reused.
std::vector<Fiber>& fiber_pool() {
  static std::vector<Fiber> pool;
  return pool;
}

std::string where() {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s block (%u,%u,%u) thread (%u,%u,%u)", running ? running->kernel : "?",
                block_idx.x, block_idx.y, block_idx.z, thread_idx.x, thread_idx.y, thread_idx.z);
  return buf;
}

// Boost.Context StackAllocator over a fiber's own preallocated stack: no allocation per block.
struct ReusedStack {
  char* base;
  bctx::stack_context allocate() {
    bctx::stack_context sc;
    sc.size = fiber_stack_bytes;
    sc.sp = base + fiber_stack_bytes;  // stacks grow down
    return sc;
  }
  void deallocate(bctx::stack_context&) noexcept {}
};

void thread_finished() {
  Scheduler& s = *running;
  Fiber& f = *s.current;
  f.wait = Wait::done;
  --s.block_live;
  Warp& w = s.warps[f.linear / 32];
  --w.live;
  if (s.block_arrived > 0 && s.block_arrived == s.block_live) {
    s.block_arrived = 0;
    ++s.block_gen;
  }
  if (w.arrived > 0 && w.arrived == w.live) {
    w.arrived = 0;
    ++w.gen;
  }
}

void yield_current() {
  Fiber& f = *running->current;
  f.caller = std::move(f.caller).resume();
}

bool resumable(const Scheduler& s, const Fiber& f) {
  switch (f.wait) {
    case Wait::none: return true;
    case Wait::block: return s.block_gen != f.gen;
    case Wait::warp: return s.warps[f.linear / 32].gen != f.gen;
    case Wait::done: return false;
  }
  return false;
}

void run_block_fibers(Scheduler& s, unsigned threads) {
  s.block_live = threads;
  s.block_arrived = 0;
  s.warps.assign((threads + 31) / 32, Warp{});
  for (unsigned t = 0; t < threads; ++t) s.warps[t / 32].live++;
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = s.fibers[t];
    f.wait = Wait::none;
    f.self = bctx::fiber(std::allocator_arg, ReusedStack{f.stack.get()}, [&f](bctx::fiber&& caller) {
      f.caller = std::move(caller);
      running->body(running->arg);
      thread_finished();
      return std::move(f.caller);
    });
  }
  unsigned done = 0;
  while (done < threads) {
    bool progressed = false;
    for (unsigned i = 0; i < threads; ++i) {
      Fiber& f = s.fibers[s.reversed ? threads - 1 - i : i];
      if (!resumable(s, f)) continue;
      f.wait = Wait::none;
      s.current = &f;
      thread_idx = f.idx;
      f.self = std::move(f.self).resume();
      progressed = true;
      if (f.wait == Wait::done) ++done;
    }
    if (!progressed) {
      unsigned at_block = 0, at_warp = 0;
      for (unsigned t = 0; t < threads; ++t) {
        at_block += s.fibers[t].wait == Wait::block;
        at_warp += s.fibers[t].wait == Wait::warp;
      }
      char buf[200];
      std::snprintf(buf, sizeof buf,
                    "%s block (%u,%u,%u): %u threads wait at __syncthreads and %u at a shuffle that the "
                    "other threads of the block (or warp) never reach",
                    s.kernel, block_idx.x, block_idx.y, block_idx.z, at_block, at_warp);
      fatal(buf);
    }
  }
}

void on_fault(int sig, siginfo_t* info, void*) {
  const char* addr = static_cast<const char*>(info->si_addr);
  char buf[320];
  int n = std::snprintf(buf, sizeof buf, "cuda_emu: %s at %p", sig == SIGSEGV ? "invalid access" : "bus error",
                        static_cast<const void*>(addr));
  if (running) n += std::snprintf(buf + n, sizeof buf - n, " in %s", where().c_str());
  // Which allocation's guard page (the lock may be held by this thread: only try it).
  if (state_mutex().try_lock()) {
    const std::size_t page = page_size();
    for (const auto& [start, a] : allocations()) {
      if (addr >= a.region && addr < a.region + page)
        n += std::snprintf(buf + n, sizeof buf - n, ": %zu bytes before an allocation of %zu bytes at %p",
                           static_cast<std::size_t>(start - addr), a.bytes, static_cast<const void*>(start));
      else if (addr >= a.region + a.region_bytes - page && addr < a.region + a.region_bytes)
        n += std::snprintf(buf + n, sizeof buf - n, ": %zu bytes past the end of an allocation of %zu bytes at %p",
                           static_cast<std::size_t>(addr - (start + a.bytes)), a.bytes, static_cast<const void*>(start));
    }
    state_mutex().unlock();
  }
  std::snprintf(buf + std::min<int>(n, sizeof buf - 2), 2, "\n");
  (void)!write(2, buf, std::strlen(buf));
  signal(sig, SIG_DFL);
  raise(sig);
}

void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa{};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
  });
  // The fault may happen on a fiber's stack: the handler runs on a stack of its own.
  thread_local std::vector<char> alt_stack;
  if (alt_stack.empty()) {
    alt_stack.resize(64 * 1024);
    stack_t ss{};
    ss.ss_sp = alt_stack.data();
    ss.ss_size = alt_stack.size();
    sigaltstack(&ss, nullptr);
  }
}

}  // namespace

bool device_numerics() {
  static const bool device = [] {
    const char* v = std::getenv("SHARDQ_EMU_NUMERICS");
    return !(v && std::string_view(v) == "host");
  }();
  return device;
}

int lane_id() {
  const unsigned linear = thread_idx.x + block_dim.x * (thread_idx.y + block_dim.y * thread_idx.z);
  return static_cast<int>(linear % 32);
}

void syncthreads() {
  Scheduler& s = *running;
  if (s.direct) {
    if (block_dim.x * block_dim.y * block_dim.z == 1) return;
    fatal(where() + " reached __syncthreads in a launch run without barriers (its earlier launches never "
                    "synchronised); the emulator cannot run it");
  }
  s.synced = true;
  Fiber& f = *s.current;
  ++s.block_arrived;
  if (s.block_arrived == s.block_live) {
    s.block_arrived = 0;
    ++s.block_gen;
    return;
  }
  f.wait = Wait::block;
  f.gen = s.block_gen;
  yield_current();
}

void warp_exchange(unsigned mask, const void* value, void* out, std::size_t bytes, int src_lane) {
  Scheduler& s = *running;
  if (s.direct) fatal(where() + " reached a shuffle in a launch run without barriers; the emulator cannot run it");
  s.synced = true;
  Fiber& f = *s.current;
  const unsigned lane = f.linear % 32;
  if (!(mask >> lane & 1u)) fatal(where() + ": a shuffle whose mask leaves out the calling lane");
  Warp& w = s.warps[f.linear / 32];
  const uint64_t gen = w.gen;
  std::memcpy(w.slots[gen & 1][lane], value, bytes);
  ++w.arrived;
  if (w.arrived == w.live) {
    w.arrived = 0;
    ++w.gen;
  } else {
    f.wait = Wait::warp;
    f.gen = gen;
    yield_current();
  }
  const unsigned warp_lanes = std::min(32u, block_dim.x * block_dim.y * block_dim.z - f.linear / 32 * 32);
  if (static_cast<unsigned>(src_lane) >= warp_lanes)
    fatal(where() + ": a shuffle reads a lane that the block does not have");
  std::memcpy(out, w.slots[gen & 1][src_lane], bytes);
}

void* dynamic_shared_memory() { return running->dynamic_shared.data(); }

void run_kernel(const void* kernel, const LaunchShape& shape, const void* const* pointers, std::size_t n_pointers,
                void (*body)(void*), void* arg) {
  const dim3 g = shape.grid, b = shape.block;
  const uint64_t threads = uint64_t{b.x} * b.y * b.z;
  if (g.x == 0 || g.y == 0 || g.z == 0 || threads == 0 || threads > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64 ||
      g.x > 2147483647u || g.y > 65535 || g.z > 65535) {
    fail(cudaErrorInvalidConfiguration);
    return;
  }
  {
    std::lock_guard lock(state_mutex());
    const auto it = dynamic_shared_limits().find(kernel);
    const std::size_t limit = it == dynamic_shared_limits().end() ? h100_dynamic_shared_default : it->second;
    if (shape.shared_bytes > limit) {
      fail(cudaErrorInvalidValue);
      return;
    }
  }
  if (!stream_valid(shape.stream)) {
    fail(cudaErrorInvalidResourceHandle);
    return;
  }
  for (std::size_t i = 0; i < n_pointers; ++i) {
    if (pointers[i] && !in_allocation(pointers[i], 0, false)) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "%s: pointer argument %zu (%p) is not device memory", shape.kernel_name, i,
                    pointers[i]);
      fatal(buf);
    }
  }

  std::lock_guard launch_lock(launch_mutex());
  install_fault_handler();
  Scheduler s(fiber_pool());
  s.kernel = shape.kernel_name;
  s.body = body;
  s.arg = arg;
  s.dynamic_shared.assign(std::max<std::size_t>(shape.shared_bytes, 16), 0xff);
  {
    std::lock_guard lock(state_mutex());
    s.direct = kernels_without_sync().count(kernel) != 0;
  }
  if (!s.direct) {
    if (s.fibers.size() < threads) s.fibers.resize(threads);
    for (unsigned t = 0; t < threads; ++t) {
      Fiber& f = s.fibers[t];
      if (!f.stack) f.stack.reset(new char[fiber_stack_bytes]);
      f.linear = t;
      f.idx = uint3{t % b.x, t / b.x % b.y, t / (b.x * b.y)};
    }
  }
  running = &s;
  grid_dim = g;
  block_dim = b;
  static uint64_t launches = 0;  // under launch_mutex
  s.reversed = launches++ % 2 == 1;
  const uint64_t blocks = uint64_t{g.x} * g.y * g.z;
  const auto nth = [&](uint64_t i, uint64_t n) { return s.reversed ? n - 1 - i : i; };
  for (uint64_t i = 0; i < blocks; ++i) {
    const uint64_t block = nth(i, blocks);
    block_idx = uint3{static_cast<unsigned>(block % g.x), static_cast<unsigned>(block / g.x % g.y),
                      static_cast<unsigned>(block / (uint64_t{g.x} * g.y))};
    if (!s.direct) {
      run_block_fibers(s, static_cast<unsigned>(threads));
      continue;
    }
    for (uint64_t j = 0; j < threads; ++j) {
      const auto t = static_cast<unsigned>(nth(j, threads));
      thread_idx = uint3{t % b.x, t / b.x % b.y, t / (b.x * b.y)};
      body(arg);
    }
  }
  running = nullptr;
  if (!s.direct && !s.synced) {
    std::lock_guard lock(state_mutex());
    kernels_without_sync().insert(kernel);
  }
}

cudaError_t func_set_attribute(const void* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return fail(cudaErrorInvalidValue);
  if (value < 0 || value > h100_dynamic_shared_optin) return fail(cudaErrorInvalidValue);
  std::lock_guard lock(state_mutex());
  dynamic_shared_limits()[kernel] = value;
  return cudaSuccess;
}

}  // namespace shardq_emu

using shardq_emu::fail;

// ---- the runtime API ---------------------------------------------------------------------------

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "shardq CUDA emulator (host)");
  prop->totalGlobalMem = std::size_t{80} << 30;
  prop->sharedMemPerBlock = shardq_emu::h100_dynamic_shared_default;
  prop->sharedMemPerBlockOptin = shardq_emu::h100_dynamic_shared_optin;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->multiProcessorCount = shardq_emu::h100_sm_count;
  prop->major = 9;
  prop->minor = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(shardq_emu::h100_dynamic_shared_default); break;
    case cudaDevAttrMultiProcessorCount: *value = shardq_emu::h100_sm_count; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = shardq_emu::h100_dynamic_shared_optin; break;
    default: return fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}
cudaError_t cudaDeviceGetPCIBusId(char* bus_id, int len, int device) {
  if (device != 0 || len < 13) return fail(cudaErrorInvalidValue);
  std::snprintf(bus_id, static_cast<std::size_t>(len), "0000:00:00.0");
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaGetLastError() { return std::exchange(shardq_emu::last_error, cudaSuccess); }
cudaError_t cudaPeekAtLastError() { return shardq_emu::last_error; }
const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unrecognized error code";
}

cudaError_t cudaMalloc(void** ptr, std::size_t bytes) {
  *ptr = shardq_emu::allocate(bytes, false);
  return *ptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}
cudaError_t cudaFree(void* ptr) { return shardq_emu::release(ptr, false); }
cudaError_t cudaMallocHost(void** ptr, std::size_t bytes) {
  *ptr = shardq_emu::allocate(bytes, true);
  return *ptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}
cudaError_t cudaFreeHost(void* ptr) { return shardq_emu::release(ptr, true); }
cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  return shardq_emu::copy(dst, src, bytes, kind);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  if (!shardq_emu::stream_valid(stream)) return fail(cudaErrorInvalidResourceHandle);
  return shardq_emu::copy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void* ptr, int value, std::size_t bytes) {
  if (bytes == 0) return cudaSuccess;
  if (!shardq_emu::in_allocation(ptr, bytes, true)) return fail(cudaErrorInvalidValue);
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, std::size_t bytes, cudaStream_t stream) {
  if (!shardq_emu::stream_valid(stream)) return fail(cudaErrorInvalidResourceHandle);
  return cudaMemset(ptr, value, bytes);
}
cudaError_t cudaMemGetInfo(std::size_t* free_bytes, std::size_t* total_bytes) {
  *total_bytes = std::size_t{80} << 30;
  *free_bytes = *total_bytes / 2;
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  if (flags > cudaStreamNonBlocking) return fail(cudaErrorInvalidValue);
  *stream = new CUstream_st;
  std::lock_guard lock(shardq_emu::state_mutex());
  shardq_emu::streams().insert(*stream);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  std::lock_guard lock(shardq_emu::state_mutex());
  if (!stream || shardq_emu::streams().erase(stream) == 0) return fail(cudaErrorInvalidResourceHandle);
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  return shardq_emu::stream_valid(stream) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  return shardq_emu::stream_valid(stream) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new CUevent_st{std::chrono::steady_clock::now()};
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!event || !shardq_emu::stream_valid(stream)) return fail(cudaErrorInvalidResourceHandle);
  event->at = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) { return event ? cudaSuccess : fail(cudaErrorInvalidResourceHandle); }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!start || !end) return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return cudaSuccess;
}
