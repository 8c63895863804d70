// NCCL device-buffer backend; see nccl_comm.hpp.
#include "comm/nccl/nccl_comm.hpp"

#include <fmt/format.h>

#include "common/error.hpp"
#include "kernels/cuda/int128_limbs.hpp"

namespace shardq::cuda {

namespace detail {
void throw_status(ncclResult_t s, const char* call, const char* file, int line) {
  throw cuda_error(fmt::format("{} failed at {}:{}: NCCL error {} ({})", call, file, line, static_cast<int>(s),
                              ncclGetErrorString(s)));
}
}  // namespace detail

namespace {

void mpi_check(int rc, const char* call) {
  if (rc != MPI_SUCCESS) throw mpi_error(fmt::format("{} failed (MPI error {}) while creating the NCCL communicator", call, rc));
}

}  // namespace

ncclUniqueId NcclComm::unique_id() {
  ncclUniqueId id;
  SHARDQ_CUDA_CHECK(ncclGetUniqueId(&id));
  return id;
}

NcclComm NcclComm::over_mpi(MPI_Comm comm, int device) {
  int rank = 0, size = 0, local_rank = 0;
  mpi_check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(comm, &size), "MPI_Comm_size");
  MPI_Comm local = MPI_COMM_NULL;
  mpi_check(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local), "MPI_Comm_split_type");
  const int rc = MPI_Comm_rank(local, &local_rank);
  MPI_Comm_free(&local);
  mpi_check(rc, "MPI_Comm_rank(node-local)");
  const int devices = device_count();
  if (devices == 0) throw cuda_error(fmt::format("NCCL backend: rank {} sees no CUDA device", rank));
  SHARDQ_CUDA_CHECK(cudaSetDevice(device >= 0 ? device : local_rank % devices));
  ncclUniqueId id{};
  if (rank == 0) id = unique_id();
  mpi_check(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, comm), "MPI_Bcast(ncclUniqueId)");
  return NcclComm(id, size, rank);
}

NcclComm::NcclComm(const ncclUniqueId& id, int n_ranks, int rank) : rank_(rank), size_(n_ranks), stream_(make_stream()) {
  if (n_ranks >= int128_max_ranks)
    throw cuda_error(fmt::format("NCCL backend: {} ranks exceed the exact int128 reduction's limit of {}", n_ranks,
                                 int128_max_ranks));
  ncclComm_t c = nullptr;
  SHARDQ_CUDA_CHECK(ncclCommInitRank(&c, n_ranks, id, rank));
  comm_.reset(c);
}

void NcclComm::send(const void* d_data, std::size_t bytes, int peer) {
  SHARDQ_CUDA_CHECK(ncclSend(d_data, bytes, ncclUint8, peer, comm_.get(), stream_.get()));
}

void NcclComm::recv(void* d_data, std::size_t bytes, int peer) {
  SHARDQ_CUDA_CHECK(ncclRecv(d_data, bytes, ncclUint8, peer, comm_.get(), stream_.get()));
}

void NcclComm::broadcast(void* d_data, std::size_t bytes, int root) {
  SHARDQ_CUDA_CHECK(ncclBroadcast(d_data, d_data, bytes, ncclUint8, root, comm_.get(), stream_.get()));
}

void NcclComm::allreduce_sum(int64_t* d_data, std::size_t n) {
  if (n == 0) return;
  SHARDQ_CUDA_CHECK(ncclAllReduce(d_data, d_data, n, ncclInt64, ncclSum, comm_.get(), stream_.get()));
  synchronize();
}

void NcclComm::allreduce_sum(hessian_int* d_data, std::size_t n) {
  if (n == 0) return;
  DeviceBuffer<int64_t> limbs(n * int128_limbs);
  DeviceBuffer<unsigned> overflow(1);
  overflow.zero();
  int128_to_limbs(d_data, n, limbs.get(), stream_.get());
  SHARDQ_CUDA_CHECK(ncclAllReduce(limbs.get(), limbs.get(), limbs.size(), ncclInt64, ncclSum, comm_.get(), stream_.get()));
  limbs_to_int128(limbs.get(), n, d_data, overflow.get(), stream_.get());
  synchronize();
  unsigned flag = 0;
  overflow.download(&flag, 1);
  if (flag) throw error("NCCL allreduce: the exact 128-bit sum over ranks overflows (Hessian sums too large)");
}

void NcclComm::synchronize() { SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream_.get())); }

}  // namespace shardq::cuda
