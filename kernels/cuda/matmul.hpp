// The matrix products of the CUDA tier's forward pass and Hessians, in the precision a job
// chooses per phase (SHARDQ_CUDA_MATMUL; issue 10 asks for the choice by measurement: the
// GPU job's quantized integers against the CPU fp32 job's, and its speed):
//   fp32    pedantic fp32 on the CUDA cores (CUBLAS_PEDANTIC_MATH): the CPU tier's rounding model
//   tf32x3  3xTF32 on the tensor cores (kernels/cuda/tf32_split.hpp): every fp32 operand split
//           into two TF32 numbers, A·B ≈ As·Bb + Ab·Bs + Ab·Bb, near-fp32 accuracy for three
//           TF32 products; a resident operand (the layer's weights) is split once (Tf32SplitCache)
//   tf32    one TF32 product (10-bit mantissa inputs, fp32 accumulation)
//   bf16    bf16 inputs (7-bit mantissa), fp32 accumulation (cublasGemmEx, CUBLAS_COMPUTE_32F_FAST_16BF)
// Everything else of the tier (GPTQ's lazy updates, the output error) stays pedantic fp32.
// Test: shardq_gpu_tests --gtest_filter='*MatmulCuda*'; benchmark: bench_gpu_matmul.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/cuda/cuda_check.hpp"

namespace shardq::cuda {

enum class matmul_precision { fp32, tf32x3, tf32, bf16 };
// "fp32" | "tf32x3" | "tf32" | "bf16"; throws shardq::error naming `what` on anything else.
matmul_precision matmul_precision_from_string(const std::string& s, const char* what);
const char* to_string(matmul_precision p);
// The names above, for messages ("fp32, tf32x3, tf32 or bf16").
const char* matmul_precision_names();

// d_big[i], d_small[i] = tf32_split(d_x[i]) for i < n (kernels/cuda/tf32_split.hpp), on `stream`.
void tf32_split(const float* d_x, int64_t n, float* d_big, float* d_small, cudaStream_t stream);

// An fp32 matrix operand; for tf32x3 optionally with its split (both halves or neither).
// Without one, Matmul::gemm splits it on the fly (its Tf32SplitCache scratch).
struct MatmulOperand {
  const float* value = nullptr;
  const float* big = nullptr;
  const float* small = nullptr;
};

// The tf32x3 split of a resident device operand (n values), made when first asked for and
// again after invalidate() or when asked for another buffer; other precisions use the values
// as they are and allocate nothing.
class Tf32SplitCache {
 public:
  MatmulOperand operand(const float* d_value, std::size_t n, matmul_precision precision, cudaStream_t stream);
  // The values changed (e.g. replaced by their dequantized form): split again at the next use.
  void invalidate() { split_of_ = nullptr; }

 private:
  DeviceBuffer<float> big_, small_;
  const float* split_of_ = nullptr;
};

// A cuBLAS handle on one stream computing in one precision.
class Matmul {
 public:
  Matmul(cudaStream_t stream, matmul_precision precision);

  matmul_precision precision() const { return precision_; }
  cudaStream_t stream() const { return stream_; }

  // cublasSgemm's contract (column-major, fp32 storage, 32-bit sizes):
  // C [m, n] = alpha · op(A) · op(B) + beta · C with op(A) [m, k] and op(B) [k, n].
  // Throws shardq::cuda_error when a size or leading dimension exceeds INT_MAX.
  void gemm(cublasOperation_t op_a, cublasOperation_t op_b, int64_t m, int64_t n, int64_t k, float alpha,
            MatmulOperand a, int64_t lda, MatmulOperand b, int64_t ldb, float beta, float* c, int64_t ldc);

 private:
  // x as it is when it has its split, else split anew into scratch_[slot] (x's stored
  // [rows, cols] column-major with leading dimension ld).
  MatmulOperand split(MatmulOperand x, int64_t rows, int64_t cols, int64_t ld, int slot);

  cudaStream_t stream_;
  matmul_precision precision_;
  unique_cublas cublas_;
  Tf32SplitCache scratch_[2];  // operands a and b, tf32x3 only
};

}  // namespace shardq::cuda
