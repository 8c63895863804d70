// The CPU tier's worker threads: a fixed set of threads that run the tiles of one BLAS call
// (kernels/cpu/blas.cpp). OpenBLAS itself runs single-threaded: its own threading splits
// work by the thread count, so results would change with it (measured: every sgemm shape
// tried gave other bits with 2 threads than with 1). Here the split is fixed by the shapes
// alone, and each tile is one single-threaded BLAS call, so the bits are the same for any
// number of threads — and for any number of MPI ranks, which choose different thread counts.
#pragma once

#include <functional>

namespace shardq::cpu {

// Threads that run tiles (the caller included). Starts as OpenBLAS's own default (all cores,
// OPENBLAS_NUM_THREADS, or the cores the process is bound to).
int worker_threads();
void set_worker_threads(int n);

// Runs task(0) ... task(n - 1) on the worker threads and returns when all are done; the first
// exception a task throws is rethrown here. A call from inside a task runs inline.
void parallel_for(int n, const std::function<void(int)>& task);

}  // namespace shardq::cpu
