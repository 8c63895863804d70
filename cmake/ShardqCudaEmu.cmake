# SHARDQ_CUDA=EMU: the CUDA tier compiled by the host compiler against the host CUDA emulator
# of tests/cuda_emu (its runtime, cuBLAS and cuSOLVER on host memory and OpenBLAS, kernels as
# cooperative fibers), so that `ctest -L gpu` runs every kernel against its CPU reference on a
# machine without a GPU: index arithmetic, bounds (guard pages), barriers, launch shapes and
# the cuBLAS/cuSOLVER call arguments; and it rounds otherwise than the host wherever a GPU may
# (expf/sinf/cosf, cuBLAS's and cuSOLVER's sums, nvcc's fma contraction), so a test that passes
# only where the two sides happen to round alike fails here. It says nothing about speed, nor
# about warp-synchronous timing or the tensor cores' own accumulation order. Never combined
# with the real toolkit in one build; NCCL is off.

add_library(shardq_cuda_emu STATIC ${CMAKE_SOURCE_DIR}/tests/cuda_emu/runtime.cpp ${CMAKE_SOURCE_DIR}/tests/cuda_emu/blas.cpp)
target_include_directories(shardq_cuda_emu PUBLIC ${CMAKE_SOURCE_DIR}/tests/cuda_emu/include
                           PRIVATE ${CMAKE_SOURCE_DIR})
find_package(Boost 1.74 REQUIRED COMPONENTS context)
target_link_libraries(shardq_cuda_emu PUBLIC shardq_blas PRIVATE Boost::context)
target_compile_options(shardq_cuda_emu PRIVATE -Wall -Wextra)
set_target_properties(shardq_cuda_emu PROPERTIES POSITION_INDEPENDENT_CODE ON)
foreach(lib cudart cublas cusolver)
  add_library(CUDA::${lib} ALIAS shardq_cuda_emu)
endforeach()

# nvcc contracts a * b + c into one fma unless __fmul_rn / __fadd_rn forbid it (--fmad=true,
# its default); the kernels' copies are built to do the same where the host has FMA, which is
# checked by running an fma, so a machine without it builds them uncontracted.
include(CheckCXXSourceRuns)
set(CMAKE_REQUIRED_FLAGS "-mfma")
check_cxx_source_runs([=[
#include <immintrin.h>
int main() {
  volatile float a = 1.0f + 0x1p-12f, c = -(1.0f + 0x1p-11f);
  const float r = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(a), _mm_set_ss(c)));
  return r == 0x1p-24f ? 0 : 1;
}]=] SHARDQ_CUDA_EMU_HOST_FMA)
unset(CMAKE_REQUIRED_FLAGS)
if(SHARDQ_CUDA_EMU_HOST_FMA)
  set(SHARDQ_CUDA_EMU_CONTRACTION "-mfma;-ffp-contract=fast")
else()
  set(SHARDQ_CUDA_EMU_CONTRACTION "-ffp-contract=off")
  message(STATUS "cuda_emu: the host has no FMA; the kernels run without nvcc's fma contraction")
endif()

# The .cu files as C++: `kernel<<<grid, block, shared, stream>>>(args)` becomes
# `kernel * ::shardq_emu::Launch{"kernel", grid, block, shared, stream}(args)` (an operator* of the
# emulator launches it) and `extern __shared__ T name[];` the launch's dynamic shared memory.
# The copies land in the build tree and are rewritten only when a .cu changes (which re-runs
# the configure step).
function(shardq_cuda_emu_sources out_var)
  set(out)
  foreach(cu ${ARGN})
    file(RELATIVE_PATH rel ${CMAKE_SOURCE_DIR} ${cu})
    set(dst ${CMAKE_BINARY_DIR}/cuda_emu/${rel}.cpp)
    file(READ ${cu} text)
    string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_]*)<<<" "\\1 * ::shardq_emu::Launch{\"\\1\", " text "${text}")
    string(REPLACE ">>>(" "}(" text "${text}")
    string(REGEX REPLACE "extern __shared__ ([A-Za-z0-9_:]+) ([A-Za-z0-9_]+)\\[\\];"
           "\\1* const \\2 = static_cast<\\1*>(::shardq_emu::dynamic_shared_memory());" text "${text}")
    # The device's expf/sinf/cosf, which need not round as the host's (device.hpp).
    string(REGEX REPLACE "([^A-Za-z0-9_:.])(expf|sinf|cosf)\\(" "\\1::shardq_emu::device_\\2(" text "${text}")
    string(FIND "${text}" ">>>" leftover)
    if(NOT leftover EQUAL -1)
      message(FATAL_ERROR "${cu}: a launch whose '>>>' is not followed by '(' on the same line")
    endif()
    file(WRITE ${dst}.tmp "#line 1 \"${cu}\"\n${text}")
    file(COPY_FILE ${dst}.tmp ${dst} ONLY_IF_DIFFERENT)
    file(REMOVE ${dst}.tmp)
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${cu})
    list(APPEND out ${dst})
  endforeach()
  set(${out_var} ${out} PARENT_SCOPE)
endfunction()

# The emulator's own tests (label emu): tests/cuda_emu/test_emulator.cu through the same rewrite.
function(shardq_cuda_emu_tests)
  shardq_cuda_emu_sources(sources ${CMAKE_SOURCE_DIR}/tests/cuda_emu/test_emulator.cu)
  add_executable(shardq_cuda_emu_tests ${sources})
  set_source_files_properties(${sources} PROPERTIES COMPILE_OPTIONS "${SHARDQ_CUDA_EMU_CONTRACTION};-Wno-unknown-pragmas")
  if(SHARDQ_CUDA_EMU_HOST_FMA)
    target_compile_definitions(shardq_cuda_emu_tests PRIVATE SHARDQ_CUDA_EMU_HOST_FMA=1)
  endif()
  target_link_libraries(shardq_cuda_emu_tests PRIVATE shardq_cuda_emu GTest::gtest GTest::gtest_main)
  gtest_discover_tests(shardq_cuda_emu_tests TEST_PREFIX "emu." DISCOVERY_TIMEOUT 60 PROPERTIES LABELS emu)
endfunction()
