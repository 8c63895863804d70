// NF4 (QLoRA / bitsandbytes blocksize 64) on the GPU, bit-identical to the CPU tier
// kernels/cpu/nf4.hpp (whose nf4_code and fp16 absmax the device functions of nf4.cu copy):
//   nf4_codes_kernel: one thread per (row, block of 64 columns): absmax, fp16 scale, codes;
//     then pack_codes (kernels/cuda/pack.hpp).
//   nf4_dequantize_kernel: one thread per weight, scales[r, c / 64] · nf4_levels[code] —
//     kernels/quantize.cpp dequantize()'s formula, bit for bit.
// Test: shardq_gpu_tests --gtest_filter='Nf4Cuda*'.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "common/tensor.hpp"
#include "kernels/quant_types.hpp"

namespace shardq::cuda {

// d_w [rows, cols] → d_codes [rows, cols] (in [0, 15]) and d_scales [rows, ceil(cols / 64)]
// (fp16 bits of the block absmax), as cpu::nf4_quantize chooses them. Launches on `stream`.
void nf4_codes(const float* d_w, int64_t rows, int64_t cols, uint8_t* d_codes, uint16_t* d_scales,
               cudaStream_t stream);

// d_wq[r*cols + c] = fp16→fp32(d_scales[r*n_blocks + c/64]) · nf4_levels[d_codes[r*cols + c]].
// Launches on `stream`.
void nf4_dequantize_device(const uint8_t* d_codes, const uint16_t* d_scales, int64_t rows, int64_t cols, float* d_wq,
                           cudaStream_t stream);

// cpu::nf4_quantize of the device weight d_w [rows, cols] (row-major, unchanged): the stored
// form on the host and, when d_wq is not null, the dequantized weights in the [rows, cols]
// device buffer d_wq, equal bit for bit to dequantize(result). Runs on `stream` and
// synchronizes it before returning. Throws shardq::error on a negative shape.
QuantizedLinear nf4_quantize_device(const float* d_w, int64_t rows, int64_t cols, float* d_wq, cudaStream_t stream);

// Host weights: upload, then nf4_quantize_device; the contract of cpu::nf4_quantize.
QuantizedLinear nf4_quantize_cuda(const Tensor& w);

}  // namespace shardq::cuda
