// Status-to-exception side of kernels/cuda/cuda_check.hpp and the handle factories.
#include "kernels/cuda/cuda_check.hpp"

#include <cstdlib>
#include <string>

#include <fmt/format.h>

#include "common/error.hpp"

namespace shardq::cuda {
namespace detail {

namespace {

[[noreturn]] void fail(const char* library, int code, const char* name, const char* call, const char* file, int line) {
  throw cuda_error(fmt::format("{} failed at {}:{}: {} error {} ({})", call, file, line, library, code, name));
}

const char* cublas_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "unknown cuBLAS status";
  }
}

const char* cusolver_name(cusolverStatus_t s) {
  switch (s) {
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    default: return "unknown cuSOLVER status";
  }
}

}  // namespace

void throw_status(cudaError_t s, const char* call, const char* file, int line) {
  fail("CUDA", static_cast<int>(s), cudaGetErrorString(s), call, file, line);
}
void throw_status(cublasStatus_t s, const char* call, const char* file, int line) {
  fail("cuBLAS", static_cast<int>(s), cublas_name(s), call, file, line);
}
void throw_status(cusolverStatus_t s, const char* call, const char* file, int line) {
  fail("cuSOLVER", static_cast<int>(s), cusolver_name(s), call, file, line);
}
void throw_message(const char* what, const char* file, int line) {
  throw cuda_error(fmt::format("{} at {}:{}", what, file, line));
}

}  // namespace detail

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error so later probes start clean
    return 0;
  }
  return n;
}

std::string device_description() {
  if (device_count() == 0) return "";
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess) return "";
  return fmt::format("{} (sm_{}{})", prop.name, prop.major, prop.minor);
}

unique_stream make_stream(bool non_blocking) {
  cudaStream_t s = nullptr;
  SHARDQ_CUDA_CHECK(cudaStreamCreateWithFlags(&s, non_blocking ? cudaStreamNonBlocking : cudaStreamDefault));
  return unique_stream(s);
}

unique_event make_event() {
  cudaEvent_t e = nullptr;
  SHARDQ_CUDA_CHECK(cudaEventCreate(&e));
  return unique_event(e);
}

namespace {

// local rank % device count: the GPU this rank uses among those it sees.
int local_device_index(int n) {
  int local_rank = 0;
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"}) {
    if (const char* v = std::getenv(var); v && *v) {
      local_rank = std::atoi(v);
      break;
    }
  }
  return local_rank % n;
}

}  // namespace

int select_local_device() {
  const int n = device_count();
  if (n == 0) throw cuda_error("device 'cuda': this process sees no CUDA device (driver, GPU or CUDA_VISIBLE_DEVICES)");
  const int device = local_device_index(n);
  SHARDQ_CUDA_CHECK(cudaSetDevice(device));
  return device;
}

std::string local_device_bus_id() {
  const int n = device_count();
  if (n == 0) return {};
  char id[32] = {0};
  SHARDQ_CUDA_CHECK(cudaDeviceGetPCIBusId(id, static_cast<int>(sizeof id), local_device_index(n)));
  return id;
}

unique_cublas make_cublas(cudaStream_t stream) {
  cublasHandle_t h = nullptr;
  SHARDQ_CUDA_CHECK(cublasCreate(&h));
  unique_cublas owner(h);
  SHARDQ_CUDA_CHECK(cublasSetStream(h, stream));
  SHARDQ_CUDA_CHECK(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));
  return owner;
}

unique_cusolver make_cusolver(cudaStream_t stream) {
  cusolverDnHandle_t h = nullptr;
  SHARDQ_CUDA_CHECK(cusolverDnCreate(&h));
  unique_cusolver owner(h);
  SHARDQ_CUDA_CHECK(cusolverDnSetStream(h, stream));
  return owner;
}

}  // namespace shardq::cuda
