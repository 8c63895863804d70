// The device side of the host CUDA emulator (tests/cuda_emu): what nvcc gives a .cu file
// (keywords, builtins, vector types, the intrinsics shardq's kernels use) defined for the host
// compiler, and the launch `kernel<<<grid, block, shared, stream>>>(args)`, which the build
// rewrites to `kernel * ::shardq_emu::Launch{"kernel", grid, block, shared, stream}(args)`
// (cmake/ShardqCudaEmu.cmake): a class-typed right operand lets operator* take the kernel and
// its arguments without moving the kernel's name.
//
// Execution model (runtime.cpp): one launch at a time, on the calling thread; blocks one after
// another; the threads of a block as cooperative fibers that switch only at __syncthreads and
// __shfl_xor_sync, the only points where CUDA lets one thread see another's writes, so a
// missing barrier gives a wrong result here as on a GPU only where the schedule exposes it.
// Arithmetic is the host's IEEE fp32/fp64, with a * b + c contracted into an fma where the
// host has FMA (as nvcc's default --fmad=true does; the build checks and passes -mfma
// -ffp-contract=fast, else -ffp-contract=off) and never inside __fmul_rn / __fadd_rn. What is
// not IEEE-exact on a GPU is not the host's here either (unless SHARDQ_EMU_NUMERICS=host):
// expf/sinf/cosf below, and cuBLAS's and cuSOLVER's summation orders (blas.cpp).
#pragma once

#include <array>
#include <cmath>
#include <math.h>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- keywords -------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __constant__
// One launch runs at a time and a block's threads share one OS thread: a static local is the
// block's shared memory (blocks run one after another, so each finds it as the last left it,
// as uninitialised shared memory may be).
#define __shared__ static

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

namespace shardq_emu {

// The builtins of the fiber that runs now (set by the scheduler before each switch to it).
extern thread_local uint3 thread_idx, block_idx;
extern thread_local dim3 block_dim, grid_dim;

void syncthreads();
// Publishes `bytes` of this lane's value, waits for the warp, returns the value `src_lane` published.
void warp_exchange(unsigned mask, const void* value, void* out, std::size_t bytes, int src_lane);
int lane_id();
// The dynamic shared memory of the running launch (its `shared` bytes).
void* dynamic_shared_memory();

}  // namespace shardq_emu

#define threadIdx (::shardq_emu::thread_idx)
#define blockIdx (::shardq_emu::block_idx)
#define blockDim (::shardq_emu::block_dim)
#define gridDim (::shardq_emu::grid_dim)
inline constexpr int warpSize = 32;

inline void __syncthreads() { ::shardq_emu::syncthreads(); }

template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "__shfl_xor_sync of a 1-8 byte value");
  const int lane = ::shardq_emu::lane_id();
  int src = lane ^ lane_mask;
  // PTX shfl.bfly: a source outside the caller's width-lane segment returns the caller's own value.
  if (src / width != lane / width) src = lane;
  T out;
  ::shardq_emu::warp_exchange(mask, &var, &out, sizeof(T), src);
  return out;
}

// ---- arithmetic intrinsics (CUDA Math API, "Single/Double Precision Intrinsics") --------------
// nvcc never fuses these into an fma (CUDA C Programming Guide, "Intrinsic Functions"); the
// kernels are built with the host's contraction where it has FMA (cmake/ShardqCudaEmu.cmake),
// so each operand and result passes an empty asm the compiler cannot see through.
namespace shardq_emu {
template <typename T>
inline T rounded(T x) {
#if defined(__x86_64__)
  __asm__("" : "+x"(x));
#else
  __asm__("" : "+w"(x));
#endif
  return x;
}
template <typename T>
inline T add_rn(T a, T b) {
  return rounded(rounded(a) + rounded(b));
}
}  // namespace shardq_emu
inline float __fadd_rn(float a, float b) { return ::shardq_emu::add_rn(a, b); }
inline float __fsub_rn(float a, float b) { return ::shardq_emu::add_rn(a, -b); }
inline float __fmul_rn(float a, float b) { return ::shardq_emu::rounded(a * b); }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dadd_rn(double a, double b) { return ::shardq_emu::add_rn(a, b); }
inline double __dmul_rn(double a, double b) { return ::shardq_emu::rounded(a * b); }
inline unsigned __float_as_uint(float x) {
  unsigned u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

// ---- the device's transcendentals -----------------------------------------------------------
// CUDA's expf, sinf and cosf are not glibc's: the CUDA C Programming Guide (Mathematical
// Functions, Table "single-precision") allows them 2 ulp, and where the host's is correctly
// rounded theirs may be one off. The build routes the kernels' calls here
// (cmake/ShardqCudaEmu.cmake), where, unless SHARDQ_EMU_NUMERICS=host, a fixed half of the
// arguments (by a hash of their bits) gets the host's result moved by one ulp, so a CPU
// reference that matches a kernel only because both called glibc fails here as on a GPU. The
// exact cases (an argument of 0, results 0, 1, ±inf, NaN) keep the host's value, as CUDA's do.
namespace shardq_emu {
// Whether the emulator rounds otherwise than the host where a GPU may (the default; false with
// SHARDQ_EMU_NUMERICS=host): these transcendentals, cuBLAS's and cuSOLVER's sums (blas.cpp).
// Defined in runtime.cpp.
bool device_numerics();
inline float device_ulp_moved(float x, float r) {
  if (!device_numerics() || x == 0.0f || r == 0.0f || r == 1.0f || r == -1.0f || !std::isfinite(r)) return r;
  uint32_t h;
  std::memcpy(&h, &x, sizeof h);
  h = (h ^ (h >> 16)) * 0x45d9f3bu;
  h ^= h >> 16;
  if (h & 1u) return r;
  return std::nextafter(r, (h & 2u) ? INFINITY : -INFINITY);
}
inline float device_expf(float x) { return device_ulp_moved(x, ::expf(x)); }
inline float device_sinf(float x) { return device_ulp_moved(x, ::sinf(x)); }
inline float device_cosf(float x) { return device_ulp_moved(x, ::cosf(x)); }
}  // namespace shardq_emu

// CUDA's integer min/max overloads (math_functions.h) for the kernels' index arithmetic.
template <typename A, typename B>
constexpr std::common_type_t<A, B> min(A a, B b) {
  return b < a ? b : a;
}
template <typename A, typename B>
constexpr std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}

// ---- atomics: a block's threads never run at the same time, so plain read-modify-writes ----------
template <typename T>
T atomicMin(T* address, T value) {
  const T old = *address;
  if (value < old) *address = value;
  return old;
}
template <typename T>
T atomicOr(T* address, T value) {
  const T old = *address;
  *address = old | value;
  return old;
}

// ---- launches -------------------------------------------------------------------------------
typedef struct CUstream_st* cudaStream_t;

namespace shardq_emu {

struct LaunchShape {
  const char* kernel_name;  // as the launch site names it (the emulator's messages)
  dim3 grid, block;
  std::size_t shared_bytes;
  cudaStream_t stream;
};

// Runs body(arg) for every thread of every block of `shape` (runtime.cpp). `kernel` (its
// address) keys the scheduler's record of whether it synchronises;
// `pointers` are the kernel's pointer arguments, each of which must be device memory or null.
void run_kernel(const void* kernel, const LaunchShape& shape, const void* const* pointers, std::size_t n_pointers,
                void (*body)(void*), void* arg);

template <typename T>
const void* as_pointer_argument(const T& v) {
  if constexpr (std::is_pointer_v<T>) return static_cast<const void*>(v);
  else return nullptr;
}

template <typename... Args>
struct PendingLaunch {
  LaunchShape shape;
  std::tuple<Args...> args;  // by value, as CUDA copies a launch's arguments
};

struct Launch {
  LaunchShape shape;
  // Templates, so that `<<<n, 256, bytes, stream>>>` with any integer types converts as it does
  // for nvcc (a braced init of the members would refuse the narrowing).
  template <typename G, typename B, typename S = std::size_t>
  Launch(const char* kernel_name, G grid, B block, S shared = 0, cudaStream_t stream = nullptr)
      : shape{kernel_name, to_dim3(grid), to_dim3(block), static_cast<std::size_t>(shared), stream} {}

  template <typename... Args>
  PendingLaunch<std::decay_t<Args>...> operator()(Args&&... args) const {
    return {shape, std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...)};
  }

 private:
  static dim3 to_dim3(dim3 d) { return d; }
  template <typename I, typename = std::enable_if_t<std::is_integral_v<I>>>
  static dim3 to_dim3(I n) {
    return dim3(static_cast<unsigned>(n));
  }
};

template <typename... Params, typename... Args>
void operator*(void (*kernel)(Params...), PendingLaunch<Args...>&& launch) {
  static_assert(sizeof...(Params) == sizeof...(Args), "kernel launched with the wrong number of arguments");
  struct Call {
    void (*kernel)(Params...);
    std::tuple<Args...>* args;
    static void run(void* self) {
      auto* c = static_cast<Call*>(self);
      std::apply([&](auto&... a) { c->kernel(a...); }, *c->args);
    }
  } call{kernel, &launch.args};
  const std::array<const void*, sizeof...(Args) + 1> pointers = std::apply(
      [](const auto&... a) { return std::array<const void*, sizeof...(Args) + 1>{as_pointer_argument(a)..., nullptr}; },
      launch.args);
  run_kernel(reinterpret_cast<const void*>(kernel), launch.shape, pointers.data(), sizeof...(Args), &Call::run, &call);
}

}  // namespace shardq_emu
