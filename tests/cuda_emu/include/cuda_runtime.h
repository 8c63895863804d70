// Host CUDA emulator (tests/cuda_emu): the runtime API header.
#pragma once
#include "cuda_runtime_api.h"
