// The one place the CUDA tier touches the raw C handles and status codes (ggml-cuda
// common.cuh, CUTLASS device_memory.h): a check macro for CUDA runtime, cuBLAS and cuSOLVER
// calls (comm/nccl/nccl_comm.hpp adds NCCL to the same macro) that throws shardq::cuda_error
// naming the call, file and line; RAII owners for streams, events, cuBLAS/cuSOLVER handles;
// a move-only DeviceBuffer<T> and a PinnedBuffer<T>; device_count() that is 0, never an
// exception, on a machine without driver or GPU (how GPU tests decide to skip).
// Test: shardq_gpu_tests (every test goes through these); no benchmark.
//
// The header is compiled by nvcc (.cu files, C++17) and by the host compiler (.cpp files):
// it includes no project header that needs C++20 or fmt; the throwing side lives in
// cuda_check.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

namespace shardq::cuda {

namespace detail {

inline bool status_ok(cudaError_t s) { return s == cudaSuccess; }
inline bool status_ok(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS; }
inline bool status_ok(cusolverStatus_t s) { return s == CUSOLVER_STATUS_SUCCESS; }

// Throw shardq::cuda_error("<call> failed at <file>:<line>: <library> <code> <name>").
[[noreturn]] void throw_status(cudaError_t s, const char* call, const char* file, int line);
[[noreturn]] void throw_status(cublasStatus_t s, const char* call, const char* file, int line);
[[noreturn]] void throw_status(cusolverStatus_t s, const char* call, const char* file, int line);
[[noreturn]] void throw_message(const char* what, const char* file, int line);

}  // namespace detail

// Any status-returning CUDA-family call; overloads of detail::status_ok / throw_status pick
// the library from the status type.
#define SHARDQ_CUDA_CHECK(call)                                                          \
  do {                                                                                   \
    const auto shardq_status_ = (call);                                                  \
    if (!::shardq::cuda::detail::status_ok(shardq_status_))                              \
      ::shardq::cuda::detail::throw_status(shardq_status_, #call, __FILE__, __LINE__);   \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, not at the next call.
#define SHARDQ_CUDA_CHECK_LAUNCH() SHARDQ_CUDA_CHECK(cudaGetLastError())

// Number of CUDA devices; 0 when the driver, the runtime or a GPU is missing.
int device_count();
// Device name and compute capability, e.g. "NVIDIA H100 80GB HBM3 (sm_90)"; "" without a device.
std::string device_description();

// Makes GPU (local rank % device count) current for this process and returns its index; the
// local rank comes from the launcher (OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID,
// SLURM_LOCALID; 0 without one), so one rank per GPU needs no further setup. Throws
// shardq::cuda_error when no GPU is visible.
int select_local_device();
// The PCI bus id ("0000:17:00.0") of the GPU select_local_device() picks, without making it
// current: ranks compare these to find two of them on one physical GPU whatever each one's
// CUDA_VISIBLE_DEVICES (srun --gpu-bind gives every rank its own "device 0"). "" without a GPU.
std::string local_device_bus_id();

struct StreamDeleter {
  void operator()(cudaStream_t s) const noexcept { cudaStreamDestroy(s); }
};
struct EventDeleter {
  void operator()(cudaEvent_t e) const noexcept { cudaEventDestroy(e); }
};
struct CublasDeleter {
  void operator()(cublasHandle_t h) const noexcept { cublasDestroy(h); }
};
struct CusolverDeleter {
  void operator()(cusolverDnHandle_t h) const noexcept { cusolverDnDestroy(h); }
};
using unique_stream = std::unique_ptr<std::remove_pointer_t<cudaStream_t>, StreamDeleter>;
using unique_event = std::unique_ptr<std::remove_pointer_t<cudaEvent_t>, EventDeleter>;
using unique_cublas = std::unique_ptr<std::remove_pointer_t<cublasHandle_t>, CublasDeleter>;
using unique_cusolver = std::unique_ptr<std::remove_pointer_t<cusolverDnHandle_t>, CusolverDeleter>;

// A stream that orders with the legacy default stream (what DeviceBuffer's synchronous copies
// use), or with `non_blocking` one that does not (a copy stream overlapping the compute one).
unique_stream make_stream(bool non_blocking = false);
unique_event make_event();

// A cuBLAS handle bound to `stream`, pedantic fp32 (comparable with the fp32 CPU tier); the
// products whose precision a job chooses go through kernels/cuda/matmul.hpp.
unique_cublas make_cublas(cudaStream_t stream);
unique_cusolver make_cusolver(cudaStream_t stream);

// Move-only owner of n elements of device memory (cudaMalloc; uninitialised).
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n) : n_(n) {
    if (n) SHARDQ_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), n * sizeof(T)));
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      if (ptr_) cudaFree(ptr_);
      ptr_ = std::exchange(o.ptr_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() { return ptr_; }
  const T* get() const { return ptr_; }
  std::size_t size() const { return n_; }
  std::size_t bytes() const { return n_ * sizeof(T); }

  // Synchronous copies on the legacy default stream (the host API of the tier is upload →
  // compute → download); make_stream() streams are blocking, so they order with these.
  void upload(const T* host, std::size_t n, std::size_t offset = 0) {
    if (n) SHARDQ_CUDA_CHECK(cudaMemcpy(ptr_ + offset, host, n * sizeof(T), cudaMemcpyHostToDevice));
  }
  void upload(const std::vector<T>& host) { upload(host.data(), host.size()); }
  void download(T* host, std::size_t n, std::size_t offset = 0) const {
    if (n) SHARDQ_CUDA_CHECK(cudaMemcpy(host, ptr_ + offset, n * sizeof(T), cudaMemcpyDeviceToHost));
  }
  std::vector<T> to_host() const {
    std::vector<T> v(n_);
    download(v.data(), n_);
    return v;
  }
  void zero() {
    if (n_) SHARDQ_CUDA_CHECK(cudaMemset(ptr_, 0, bytes()));
  }

 private:
  T* ptr_ = nullptr;
  std::size_t n_ = 0;
};

template <typename T>
DeviceBuffer<T> to_device(const T* host, std::size_t n) {
  DeviceBuffer<T> d(n);
  d.upload(host, n);
  return d;
}
template <typename T>
DeviceBuffer<T> to_device(const std::vector<T>& host) {
  return to_device(host.data(), host.size());
}

// Page-locked host memory (cudaMallocHost) for asynchronous copies; move-only.
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(std::size_t n) : n_(n) {
    if (n) SHARDQ_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&ptr_), n * sizeof(T)));
  }
  ~PinnedBuffer() {
    if (ptr_) cudaFreeHost(ptr_);
  }
  PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    if (this != &o) {
      if (ptr_) cudaFreeHost(ptr_);
      ptr_ = std::exchange(o.ptr_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  T* get() { return ptr_; }
  const T* get() const { return ptr_; }
  T& operator[](std::size_t i) { return ptr_[i]; }
  std::size_t size() const { return n_; }

 private:
  T* ptr_ = nullptr;
  std::size_t n_ = 0;
};

// n elements from src to dst on `stream`, host or device on either side (unified addressing
// tells cudaMemcpyDefault which). Asynchronous: pageable host memory may still be copied
// synchronously by the driver, and the caller synchronises before reading a host result.
template <typename T>
void copy_async(T* dst, const T* src, std::size_t n, cudaStream_t stream) {
  if (n) SHARDQ_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDefault, stream));
}

// Blocks of `threads` covering n items.
inline unsigned grid_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

}  // namespace shardq::cuda
