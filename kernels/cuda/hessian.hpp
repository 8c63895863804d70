// GPTQ's layer Hessian H = 2/n · Σ xxᵀ accumulated on the GPU into exactly the fixed-point
// integers of the CPU tier (kernels/cpu/hessian.hpp), so GPU and CPU accumulators of the same
// micro-batches merge, and reductions across ranks stay exact whatever device produced them.
//   HessianPartial (cublasSsyrk in fp32 pedantic; the other precisions of
//   kernels/cuda/matmul.hpp: tensor-core gemms of the lower triangle by column blocks) per
//   micro-batch → hessian_fixed_point_add
//   kernel (kernels/cuda/hessian.cu) adding trunc(P · 2^64) to the device-resident packed sums;
//   hessian_finalize kernel: the full symmetric fp32 H on the device, bit for bit
//   cpu::HessianAccumulator::finalize of the same sums.
// The fp32 partial of one micro-batch is rounded by cuBLAS in its own summation order, so
// GPU sums equal the CPU's bit for bit when every partial is exact (e.g. small-integer
// activations) and otherwise agree to fp32 rounding of each partial.
// CPU reference: cpu::HessianAccumulator. Test: shardq_gpu_tests --gtest_filter='*HessianCuda*'.
#pragma once

#include <cstdint>

#include "kernels/cpu/hessian.hpp"
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/hessian.cuh"
#include "kernels/cuda/matmul.hpp"

namespace shardq::cuda {

// Columns per gemm of the lower triangle (precisions other than fp32).
inline constexpr int64_t hessian_gemm_block = 1024;

// One micro-batch's fp32 partial P = xᵀx of the device matrix d_x [n_tokens, dim] (row-major)
// into the LOWER triangle of the column-major [dim, dim] d_partial (the upper one is left as
// it is), in a matmul precision of kernels/cuda/matmul.hpp: cublasSsyrk for fp32, tensor-core
// gemms of the lower triangle by column blocks of hessian_gemm_block for the others (x's
// tf32x3 split made once for all of them). On `stream`. HessianAccumulatorCuda runs it per
// micro-batch; bench_gpu_matmul times it.
class HessianPartial {
 public:
  HessianPartial(cudaStream_t stream, matmul_precision precision);
  matmul_precision precision() const { return matmul_.precision(); }
  void compute(const float* d_x, int64_t n_tokens, int64_t dim, float* d_partial);
  // The products compute() runs, as the benchmarks count them: syrk n·dim² (what it
  // computes), each gemm 2·m·n·k, three of them per block for tf32x3.
  static double flops(int64_t dim, int64_t n_tokens, matmul_precision precision);

 private:
  cudaStream_t stream_;
  unique_cublas syrk_;
  Matmul matmul_;
  Tf32SplitCache x_split_;
};

class HessianAccumulatorCuda {
 public:
  // Work runs on `stream` (the caller's, e.g. the layer forward's, so taps need no extra
  // synchronisation); a null stream gives the accumulator its own. It must be a blocking
  // stream (make_stream()): reset() and upload() run on the legacy default stream.
  explicit HessianAccumulatorCuda(int64_t dim, cudaStream_t stream = nullptr,
                                  matmul_precision precision = matmul_precision::fp32);

  int64_t dim() const { return dim_; }
  int64_t n_tokens() const { return n_tokens_; }

  // Adds Σ xxᵀ over the rows of the device matrix d_x [n_tokens, dim] (row-major, fp32).
  // Throws shardq::error (as the CPU tier) on a non-finite entry or a fixed-point overflow.
  void add(const float* d_x, int64_t n_tokens);
  // The same without waiting: the range and overflow checks of every enqueued add surface at
  // the next check() (the flags are sticky).
  void enqueue(const float* d_x, int64_t n_tokens);
  void check();
  // The same from host memory (uploads first).
  void add_host(const float* x, int64_t n_tokens);
  // The packed sums on the device (layout of cpu::HessianAccumulator::packed_sums), e.g. for
  // an NCCL reduction (comm/nccl/nccl_comm.hpp); after reducing them in place, set the total
  // token count with set_n_tokens.
  hessian_int* device_sums() { return sums_.get(); }
  std::size_t packed_size() const { return sums_.size(); }
  void set_n_tokens(int64_t n) { n_tokens_ = n; }
  // Back to no tokens (the next layer's statistics reuse the memory).
  void reset();

  // A CPU accumulator holding the same sums and token count (merge / finalize there).
  cpu::HessianAccumulator download() const;
  // Replaces sums and token count with those of `total` (e.g. reduced across ranks on the host).
  void upload(const cpu::HessianAccumulator& total);

  // H = 2/n_tokens · Σ xxᵀ into d_h [dim, dim] (full symmetric, fp32; zero when empty), bit
  // for bit cpu::HessianAccumulator::finalize. Enqueued on the accumulator's stream.
  void finalize(float* d_h) const;

  cudaStream_t stream() const { return stream_; }

 private:
  int64_t dim_ = 0;
  int64_t n_tokens_ = 0;
  unique_stream own_stream_;
  cudaStream_t stream_ = nullptr;
  HessianPartial products_;
  DeviceBuffer<hessian_int> sums_;
  DeviceBuffer<float> partial_;  // [dim, dim] column-major, lower triangle used
  DeviceBuffer<unsigned> flags_;
  DeviceBuffer<float> staging_;  // add_host's upload
};

}  // namespace shardq::cuda
