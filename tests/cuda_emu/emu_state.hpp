// What the two halves of the host CUDA emulator (runtime.cpp, blas.cpp) share.
#pragma once

#include <cstddef>
#include <string>

#include "cuda_runtime_api.h"

namespace shardq_emu {

// Stops the process with "cuda_emu: <message>" on stderr: a use that a GPU would fault on or
// hang at, where the emulator cannot go on.
[[noreturn]] void fatal(const std::string& message);

// Whether [p, p + bytes) lies inside one allocation of cudaMalloc (or, unless `device_only`,
// of cudaMallocHost).
bool in_allocation(const void* p, std::size_t bytes, bool device_only);

// Sets the calling thread's last error (cudaGetLastError) and returns it.
cudaError_t fail(cudaError_t e);

}  // namespace shardq_emu
