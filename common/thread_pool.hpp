// The process's worker threads: a fixed set of threads that run the tiles of one BLAS call
// (kernels/cpu/blas.cpp) or other independent pieces of work (hashing files). OpenBLAS
// itself runs single-threaded: its own threading splits work by the thread count, so
// results would change with it (measured: every sgemm shape tried gave other bits with 2
// threads than with 1). The BLAS wrappers split by the shapes alone, each tile one
// single-threaded call, so the bits are the same for any number of threads — and for any
// number of MPI ranks, which choose different thread counts.
#pragma once

#include <functional>

namespace shardq {

// Threads that run tasks (the caller included). Starts as OPENBLAS_NUM_THREADS or
// OMP_NUM_THREADS when set, else the cores the process may run on (its affinity: one under
// mpirun's default binding of one core per rank).
int worker_threads();
void set_worker_threads(int n);

// Runs task(0) ... task(n - 1) on the worker threads and returns when all are done; the first
// exception a task throws is rethrown here. A call from inside a task runs inline.
void parallel_for(int n, const std::function<void(int)>& task);

}  // namespace shardq
