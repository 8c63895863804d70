#!/usr/bin/env bash
# The test command: install dependencies, configure, build, run every test.
#   scripts/test.sh            # everything (CUDA compiled when nvcc is found; gpu tests skip without a GPU),
#                              # then the gpu tests again on the host CUDA emulator (BUILD_DIR-emu)
#   BUILD_DIR=build-x scripts/test.sh -L unit    # extra arguments go to ctest (and skip the emulator stage)
#   SHARDQ_EMU=0 scripts/test.sh                 # without the emulator stage
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-}
cmake --build "$BUILD_DIR" -j "$JOBS"
(cd "$BUILD_DIR" && ctest --output-on-failure --timeout 900 -j "$JOBS" "$@")

# The CUDA tier once more, compiled by the host compiler against the host CUDA emulator
# (cmake/ShardqCudaEmu.cmake): every gpu-labelled test then runs here, without a GPU.
if [ $# -eq 0 ] && [ "${SHARDQ_EMU:-1}" != 0 ]; then
  EMU_BUILD_DIR=${EMU_BUILD_DIR:-$BUILD_DIR-emu}
  cmake -S . -B "$EMU_BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSHARDQ_CUDA=EMU -DSHARDQ_BENCH=OFF ${CMAKE_ARGS:-}
  cmake --build "$EMU_BUILD_DIR" -j "$JOBS" --target shardq shardq_gpu_tests shardq_cuda_emu_tests
  (cd "$EMU_BUILD_DIR" && ctest --output-on-failure --timeout 900 -j "$JOBS" -L 'gpu|emu')
fi
