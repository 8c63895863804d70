// The sequential engine (worker/sequential_engine.hpp) on one GPU. Built with the CUDA tier.
//
// Per layer: load uploads the layer's weights once (kernels/cuda/forward.hpp); calibrate runs
// every resident micro-batch through a scratch copy, the four linear inputs tapped straight
// into device Hessian accumulators (kernels/cuda/hessian.hpp, the CPU tier's fixed-point
// integers, so the sums across ranks are exact) and LIM's cosines computed on the device;
// quantize factors H⁻¹ with cuSOLVER once per Hessian and GPTQ setting
// (kernels/cuda/gptq_factor.hpp) and runs GPTQ on the device weights, leaving the
// dequantized weights in place of the originals for propagate. Only the packed integers,
// scales and zeros travel back to the host (for the shard).
//
// With several ranks the statistics are reduced exactly, on the device through NCCL (`nccl`)
// or through the host over MPI, and GPTQ's rows are split as on the CPU
// (worker/layer_quantize.hpp). In a calibrated layer RTN, NF4 and int8 linears are quantized
// on the device too (kernels/cuda/{rtn,nf4,int8}.hpp, bit-identical to the CPU tier), every
// rank the whole linear (they cost O(weights)), and their error measured on the GPU; a layer
// without calibration (no GPTQ linear) is quantized by the CPU tier.
#pragma once

#include <memory>

#include "worker/sequential_engine.hpp"

namespace shardq {

std::unique_ptr<SequentialEngine> make_sequential_engine_cuda(const ModelConfig& config, MicroBatches micro_batches,
                                                              const CudaMatmul& cuda_matmul, bool nccl);

}  // namespace shardq
