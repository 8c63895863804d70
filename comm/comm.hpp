// The collectives a quantization job needs, behind one interface so the job code does not
// care whether ranks talk over MPI (always built) or NCCL (GPU buffers, SHARDQ_HAVE_NCCL).
//
// Every reduction that feeds quantized weights is exact and therefore independent of the
// number of ranks: Hessians are reduced as 128-bit fixed-point integers (integer addition is
// associative), and floating-point statistics are gathered and summed in one fixed order on
// the root. This is what makes `-np 1`, `-np 2` and `-np 3` produce the same bits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace shardq {

// The fixed-point integers of exact reductions (the GCC/Clang 128-bit extension; the same
// type as cpu::hessian_int).
__extension__ typedef __int128 exact_int;

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "mpi", "nccl"

  virtual void barrier() = 0;
  virtual void broadcast(void* data, std::size_t bytes, int root) = 0;
  virtual void send(const void* data, std::size_t bytes, int dest, int tag) = 0;
  virtual void recv(void* data, std::size_t bytes, int source, int tag) = 0;
  // In-place element-wise exact sum over all ranks.
  virtual void allreduce_sum(exact_int* data, std::size_t n) = 0;
  virtual void allreduce_sum(int64_t* data, std::size_t n) = 0;
  // Variable-size gather of byte strings to `root` (in rank order); empty elsewhere.
  virtual std::vector<std::string> gather(const std::string& mine, int root) = 0;
  // Ends every rank of the job now (a failed rank must not leave the others hanging).
  [[noreturn]] virtual void abort(int code) noexcept = 0;

  bool is_root() const { return rank() == 0; }
  void broadcast(std::string& s, int root);
  template <typename T>
  void broadcast_vector(std::vector<T>& v, int root) {
    uint64_t n = v.size();
    broadcast(&n, sizeof n, root);
    v.resize(n);
    if (n) broadcast(v.data(), n * sizeof(T), root);
  }
};

// "auto" and "mpi" give the MPI communicator (NCCL sits beside it for device buffers).
// MPI is initialised on first use and finalised at exit by the environment guard.
std::unique_ptr<Comm> comm_create(const std::string& kind);

// RAII guard owning MPI_Init_thread / MPI_Finalize for the process.
class MpiEnvironment {
 public:
  MpiEnvironment(int* argc, char*** argv);
  ~MpiEnvironment();
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;
  static bool initialized();
};

// This machine's host name (gethostname); ranks that print the same one share a node.
std::string host_name();
// "host:rank" for log lines (the host name up to its first dot).
std::string rank_label(const Comm& comm);

}  // namespace shardq
