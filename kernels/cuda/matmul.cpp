// Matrix products per precision, host side; see kernels/cuda/matmul.hpp.
#include "kernels/cuda/matmul.hpp"

#include <climits>

#include <fmt/format.h>

#include "common/error.hpp"

namespace shardq::cuda {
namespace {

int checked_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    throw cuda_error(fmt::format("matmul (cuda): {} = {} is outside cuBLAS's 32-bit range", what, v));
  return static_cast<int>(v);
}

// Values spanned by a column-major [rows, cols] matrix with leading dimension ld.
std::size_t span(int64_t rows, int64_t cols, int64_t ld) {
  return rows > 0 && cols > 0 ? static_cast<std::size_t>(ld * (cols - 1) + rows) : 0;
}

}  // namespace

matmul_precision matmul_precision_from_string(const std::string& s, const char* what) {
  if (s == "fp32") return matmul_precision::fp32;
  if (s == "tf32x3") return matmul_precision::tf32x3;
  if (s == "tf32") return matmul_precision::tf32;
  if (s == "bf16") return matmul_precision::bf16;
  throw error(fmt::format("{}: unknown matmul precision '{}' ({})", what, s, matmul_precision_names()));
}

const char* to_string(matmul_precision p) {
  switch (p) {
    case matmul_precision::fp32: return "fp32";
    case matmul_precision::tf32x3: return "tf32x3";
    case matmul_precision::tf32: return "tf32";
    case matmul_precision::bf16: return "bf16";
  }
  return "?";
}

const char* matmul_precision_names() { return "fp32, tf32x3, tf32 or bf16"; }

MatmulOperand Tf32SplitCache::operand(const float* d_value, std::size_t n, matmul_precision precision,
                                      cudaStream_t stream) {
  if (precision != matmul_precision::tf32x3) return {d_value};
  if (split_of_ != d_value) {
    if (big_.size() < n) {
      SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream));  // the old halves may still be read
      big_ = DeviceBuffer<float>(n);
      small_ = DeviceBuffer<float>(n);
    }
    tf32_split(d_value, static_cast<int64_t>(n), big_.get(), small_.get(), stream);
    split_of_ = d_value;
  }
  return {d_value, big_.get(), small_.get()};
}

Matmul::Matmul(cudaStream_t stream, matmul_precision precision)
    : stream_(stream), precision_(precision), cublas_(make_cublas(stream)) {
  // fp32 keeps make_cublas's pedantic mode; tf32 and the pre-rounded tf32x3 operands run
  // cublasSgemm on the TF32 tensor cores; bf16 goes through cublasGemmEx's compute type.
  const cublasMath_t mode = precision == matmul_precision::fp32 ? CUBLAS_PEDANTIC_MATH
                            : precision == matmul_precision::bf16 ? CUBLAS_DEFAULT_MATH
                                                                  : CUBLAS_TF32_TENSOR_OP_MATH;
  SHARDQ_CUDA_CHECK(cublasSetMathMode(cublas_.get(), mode));
}

MatmulOperand Matmul::split(MatmulOperand x, int64_t rows, int64_t cols, int64_t ld, int slot) {
  if (x.big && x.small) return x;
  scratch_[slot].invalidate();  // the same buffer may hold other values than at the last call
  return scratch_[slot].operand(x.value, span(rows, cols, ld), precision_, stream_);
}

void Matmul::gemm(cublasOperation_t op_a, cublasOperation_t op_b, int64_t m, int64_t n, int64_t k, float alpha,
                  MatmulOperand a, int64_t lda, MatmulOperand b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const int im = checked_int(m, "m"), in = checked_int(n, "n"), ik = checked_int(k, "k");
  const int ilda = checked_int(lda, "lda"), ildb = checked_int(ldb, "ldb"), ildc = checked_int(ldc, "ldc");
  if (m == 0 || n == 0) return;
  cublasHandle_t h = cublas_.get();
  const auto sgemm = [&](const float* pa, const float* pb, float beta_now) {
    SHARDQ_CUDA_CHECK(cublasSgemm(h, op_a, op_b, im, in, ik, &alpha, pa, ilda, pb, ildb, &beta_now, c, ildc));
  };
  switch (precision_) {
    case matmul_precision::fp32:
    case matmul_precision::tf32:
      sgemm(a.value, b.value, beta);
      return;
    case matmul_precision::bf16:
      SHARDQ_CUDA_CHECK(cublasGemmEx(h, op_a, op_b, im, in, ik, &alpha, a.value, CUDA_R_32F, ilda, b.value, CUDA_R_32F,
                                     ildb, &beta, c, CUDA_R_32F, ildc, CUBLAS_COMPUTE_32F_FAST_16BF,
                                     CUBLAS_GEMM_DEFAULT));
      return;
    case matmul_precision::tf32x3: {
      // Stored shapes: op(A) [m, k] is A [m, k] (N) or [k, m] (T); likewise B.
      a = split(a, op_a == CUBLAS_OP_N ? m : k, op_a == CUBLAS_OP_N ? k : m, lda, 0);
      b = split(b, op_b == CUBLAS_OP_N ? k : n, op_b == CUBLAS_OP_N ? n : k, ldb, 1);
      // The small cross terms first, the leading term last (it carries the magnitude).
      sgemm(a.small, b.big, beta);
      sgemm(a.big, b.small, 1.0f);
      sgemm(a.big, b.big, 1.0f);
      return;
    }
  }
}

}  // namespace shardq::cuda
