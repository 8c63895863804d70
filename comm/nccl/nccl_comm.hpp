// NCCL backend for device buffers: activations passed between pipeline ranks (send/recv) and
// exact reductions of fixed-point Hessians (allreduce_sum) without a trip through host memory.
// It sits beside the MPI Comm (comm/comm.hpp), which still carries the plan, the gathers and
// every host-side message; MPI also bootstraps it (rank 0 ncclGetUniqueId → MPI_Bcast →
// ncclCommInitRank). Built only with SHARDQ_HAVE_NCCL.
//
// Exactness. NCCL has no 128-bit integer sum: allreduce_sum(hessian_int*) splits every value
// into three 43-bit limbs (kernels/cuda/int128_limbs.hpp), reduces them with ncclInt64 sums
// (exact for < 2^19 ranks) and recombines with carries, so the result is the exact int128 sum
// for any rank count and any NCCL algorithm — the `-np N` bit-identity of the MPI backend.
// Floating-point sums are deliberately absent (NCCL's order is not fixed).
//
// Test: shardq_gpu_tests --gtest_filter='*NcclComm*' (one rank; a multi-rank run needs
// mpirun on a multi-GPU node).
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <type_traits>

#include <mpi.h>
#include <nccl.h>

#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/hessian.cuh"

namespace shardq::cuda {

namespace detail {
// NCCL joins the SHARDQ_CUDA_CHECK family (kernels/cuda/cuda_check.hpp).
inline bool status_ok(ncclResult_t s) { return s == ncclSuccess; }
[[noreturn]] void throw_status(ncclResult_t s, const char* call, const char* file, int line);
}  // namespace detail

// While an exception unwinds, this rank is on its way to Comm::abort, and its peers may be
// blocked in a collective it will never join: ncclCommDestroy (an implicit ncclCommFinalize)
// would wait for them forever, and the job would hang instead of aborting. The communicator
// is left to the process exit then.
struct NcclCommDeleter {
  void operator()(ncclComm_t c) const noexcept {
    if (std::uncaught_exceptions() > 0) return;
    ncclCommDestroy(c);
  }
};
using unique_nccl_comm = std::unique_ptr<std::remove_pointer_t<ncclComm_t>, NcclCommDeleter>;

class NcclComm {
 public:
  // Collective over `comm`: binds `device` (the engine's, cuda::select_local_device; -1: the
  // node-local MPI rank % device_count), rank 0 creates the NCCL id and broadcasts it over
  // MPI. Throws cuda_error / mpi_error.
  static NcclComm over_mpi(MPI_Comm comm = MPI_COMM_WORLD, int device = -1);
  static ncclUniqueId unique_id();
  // Joins the clique `id` as `rank` of `n_ranks` on the current device.
  NcclComm(const ncclUniqueId& id, int n_ranks, int rank);

  int rank() const { return rank_; }
  int size() const { return size_; }
  cudaStream_t stream() const { return stream_.get(); }

  // Point-to-point on device memory; NCCL has no tags, so a pair of ranks must post its
  // messages in the same order on both sides. Enqueued on stream(); synchronize() to wait.
  void send(const void* d_data, std::size_t bytes, int peer);
  void recv(void* d_data, std::size_t bytes, int peer);
  void broadcast(void* d_data, std::size_t bytes, int root);
  // In-place exact sums over all ranks (synchronous: they return when the sums are in place).
  void allreduce_sum(int64_t* d_data, std::size_t n);
  void allreduce_sum(hessian_int* d_data, std::size_t n);
  void synchronize();

 private:
  int rank_ = 0;
  int size_ = 0;
  unique_stream stream_;
  unique_nccl_comm comm_;
};

}  // namespace shardq::cuda
