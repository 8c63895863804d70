// Host CUDA emulator, library side: the cuBLAS and cuSOLVER calls of cublas_v2.h and
// cusolverDn.h, with their argument checks (cuBLAS returns CUBLAS_STATUS_INVALID_VALUE for a
// bad size or leading dimension), run by OpenBLAS and LAPACKE on the column-major operands.
// Every operand must lie wholly inside one device allocation, which is what catches a wrong
// leading dimension, transpose or size before it reads or writes the neighbouring memory.
// Unless SHARDQ_EMU_NUMERICS=host, the results are the CPU's only up to rounding, as a GPU's are
// (the sums over k in another order, the factorisations in fp64).
#include <cblas.h>
#include <lapacke.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cublas_v2.h"
#include "cusolverDn.h"
#include "emu_state.hpp"
#include "kernels/cuda/tf32_split.hpp"

struct cublasContext {
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
  cudaStream_t stream = nullptr;
};
struct cusolverDnContext {
  cudaStream_t stream = nullptr;
};
struct cusolverDnParams {};

namespace {

// A column-major rows × cols operand with leading dimension ld at p, inside one allocation.
void require_operand(const char* call, const char* name, const void* p, int64_t rows, int64_t cols, int64_t ld,
                     std::size_t elem) {
  if (rows == 0 || cols == 0) return;
  const std::size_t bytes = static_cast<std::size_t>((cols - 1) * ld + rows) * elem;
  if (!shardq_emu::in_allocation(p, bytes, true)) {
    char buf[200];
    std::snprintf(buf, sizeof buf, "%s: operand %s (%lld x %lld, ld %lld at %p) is not inside one device allocation",
                  call, name, static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(ld), p);
    shardq_emu::fatal(buf);
  }
}

// bf16 of x, rounded to nearest even (what the tensor cores see under CUBLAS_COMPUTE_32F_FAST_16BF).
float round_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  float y;
  std::memcpy(&y, &u, sizeof y);
  return y;
}

// The operand as the tensor cores read it: a rounded copy, or the operand itself in fp32.
const float* rounded_operand(const float* p, int64_t rows, int64_t cols, int64_t ld, float (*round)(float),
                             std::vector<float>& copy) {
  if (!round) return p;
  copy.assign(static_cast<std::size_t>(ld * (cols - 1) + rows), 0.0f);
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = 0; r < rows; ++r) copy[c * ld + r] = round(p[c * ld + r]);
  return copy.data();
}

CBLAS_TRANSPOSE cblas_op(cublasOperation_t op) { return op == CUBLAS_OP_N ? CblasNoTrans : CblasTrans; }

// Device numerics for cuBLAS: a sum over k taken in two parts, the first k1 = k/3 made odd (no
// blocking of OpenBLAS's falls there) terms, then the rest added to that result. cuBLAS's
// kernels sum in their own tile order, so their fp32 result is the CPU's only up to rounding;
// this one is too. k itself (one part) under SHARDQ_EMU_NUMERICS=host.
int first_part_of_k(int k) { return shardq_emu::device_numerics() && k >= 2 ? (k / 3) | 1 : k; }

cublasStatus_t gemm(const char* call, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                    const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc,
                    float (*round)(float)) {
  if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
  const int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
  const int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
  if (lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) || ldc < std::max(1, m)) return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  if (k > 0) {
    require_operand(call, "A", a, a_rows, a_cols, lda, sizeof(float));
    require_operand(call, "B", b, b_rows, b_cols, ldb, sizeof(float));
  }
  require_operand(call, "C", c, m, n, ldc, sizeof(float));
  std::vector<float> a_copy, b_copy;
  const float* pa = k > 0 ? rounded_operand(a, a_rows, a_cols, lda, round, a_copy) : a;
  const float* pb = k > 0 ? rounded_operand(b, b_rows, b_cols, ldb, round, b_copy) : b;
  // C = αA₁B₁ + βC, then C += αA₂B₂ (first_part_of_k).
  const int k1 = first_part_of_k(k);
  cblas_sgemm(CblasColMajor, cblas_op(ta), cblas_op(tb), m, n, k1, alpha, pa, lda, pb, ldb, beta, c, ldc);
  if (k1 < k) {
    const float* a2 = ta == CUBLAS_OP_N ? pa + static_cast<int64_t>(k1) * lda : pa + k1;
    const float* b2 = tb == CUBLAS_OP_N ? pb + k1 : pb + static_cast<int64_t>(k1) * ldb;
    cblas_sgemm(CblasColMajor, cblas_op(ta), cblas_op(tb), m, n, k - k1, alpha, a2, lda, b2, ldb, 1.0f, c, ldc);
  }
  return CUBLAS_STATUS_SUCCESS;
}

// Device numerics for cuSOLVER: the fp32 factorisation done in fp64 and rounded back, which
// agrees with LAPACK's fp32 result only up to rounding, as cuSOLVER's blocked one does.
template <typename F>
lapack_int via_double(float* a, int64_t n, int64_t lda, F&& factor) {
  std::vector<double> d(static_cast<std::size_t>((n - 1) * lda + n));
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = a[i];
  const lapack_int r = factor(d.data());
  for (std::size_t i = 0; i < d.size(); ++i) a[i] = static_cast<float>(d[i]);
  return r;
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                           int k, const float* alpha, const float* A, int lda, const float* B, int ldb,
                           const float* beta, float* C, int ldc) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  float (*round)(float) = handle->math == CUBLAS_TF32_TENSOR_OP_MATH ? &shardq::cuda::round_to_tf32 : nullptr;
  return gemm("cublasSgemm", transa, transb, m, n, k, *alpha, A, lda, B, ldb, *beta, C, ldc, round);
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (Atype != CUDA_R_32F || Btype != CUDA_R_32F || Ctype != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  float (*round)(float) = nullptr;
  switch (computeType) {
    case CUBLAS_COMPUTE_32F_PEDANTIC: break;
    case CUBLAS_COMPUTE_32F: round = handle->math == CUBLAS_TF32_TENSOR_OP_MATH ? &shardq::cuda::round_to_tf32 : nullptr; break;
    case CUBLAS_COMPUTE_32F_FAST_16BF: round = &round_to_bf16; break;
    case CUBLAS_COMPUTE_32F_FAST_TF32: round = &shardq::cuda::round_to_tf32; break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return gemm("cublasGemmEx", transa, transb, m, n, k, *static_cast<const float*>(alpha), static_cast<const float*>(A),
              lda, static_cast<const float*>(B), ldb, *static_cast<const float*>(beta), static_cast<float*>(C), ldc,
              round);
}

cublasStatus_t cublasSsyrk(cublasHandle_t handle, cublasFillMode_t uplo, cublasOperation_t trans, int n, int k,
                           const float* alpha, const float* A, int lda, const float* beta, float* C, int ldc) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (n < 0 || k < 0 || (uplo != CUBLAS_FILL_MODE_LOWER && uplo != CUBLAS_FILL_MODE_UPPER)) return CUBLAS_STATUS_INVALID_VALUE;
  const int a_rows = trans == CUBLAS_OP_N ? n : k, a_cols = trans == CUBLAS_OP_N ? k : n;
  if (lda < std::max(1, a_rows) || ldc < std::max(1, n)) return CUBLAS_STATUS_INVALID_VALUE;
  if (n == 0) return CUBLAS_STATUS_SUCCESS;
  if (k > 0) require_operand("cublasSsyrk", "A", A, a_rows, a_cols, lda, sizeof(float));
  require_operand("cublasSsyrk", "C", C, n, n, ldc, sizeof(float));
  // C = αA₁A₁ᵀ + βC, then C += αA₂A₂ᵀ (first_part_of_k).
  const CBLAS_UPLO fill = uplo == CUBLAS_FILL_MODE_LOWER ? CblasLower : CblasUpper;
  const int k1 = first_part_of_k(k);
  cblas_ssyrk(CblasColMajor, fill, cblas_op(trans), n, k1, *alpha, A, lda, *beta, C, ldc);
  if (k1 < k) {
    const float* a2 = trans == CUBLAS_OP_N ? A + static_cast<int64_t>(k1) * lda : A + k1;
    cblas_ssyrk(CblasColMajor, fill, cblas_op(trans), n, k - k1, *alpha, a2, lda, 1.0f, C, ldc);
  }
  return CUBLAS_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t* handle) {
  *handle = new cusolverDnContext;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t handle) {
  if (!handle) return CUSOLVER_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUSOLVER_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnCreateParams(cusolverDnParams_t* params) {
  *params = new cusolverDnParams;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnDestroyParams(cusolverDnParams_t params) {
  delete params;
  return CUSOLVER_STATUS_SUCCESS;
}

namespace {

// What the workspaces are asked to be: some device bytes, no host bytes (as cuSOLVER answers
// for fp32 potrf/trtri), so that a caller which under-allocates them is caught.
std::size_t workspace_bytes(int64_t n) { return static_cast<std::size_t>(n) * 64 * sizeof(float); }

cusolverStatus_t check_square(const char* call, cublasFillMode_t uplo, int64_t n, cudaDataType type, const void* A,
                              int64_t lda) {
  if (type != CUDA_R_32F) return CUSOLVER_STATUS_NOT_SUPPORTED;
  if (n < 0 || lda < std::max<int64_t>(1, n) || (uplo != CUBLAS_FILL_MODE_LOWER && uplo != CUBLAS_FILL_MODE_UPPER))
    return CUSOLVER_STATUS_INVALID_VALUE;
  require_operand(call, "A", A, n, n, lda, sizeof(float));
  return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t check_workspace(const char* call, int64_t n, const void* device, std::size_t device_bytes) {
  if (device_bytes < workspace_bytes(n)) return CUSOLVER_STATUS_INVALID_VALUE;
  if (device_bytes && !shardq_emu::in_allocation(device, device_bytes, true))
    shardq_emu::fatal(std::string(call) + ": the device workspace is not inside one device allocation");
  return CUSOLVER_STATUS_SUCCESS;
}

void write_info(const char* call, int* info, int value) {
  if (!shardq_emu::in_allocation(info, sizeof(int), true))
    shardq_emu::fatal(std::string(call) + ": info is not device memory");
  *info = value;
}

}  // namespace

cusolverStatus_t cusolverDnXpotrf_bufferSize(cusolverDnHandle_t handle, cusolverDnParams_t, cublasFillMode_t uplo,
                                             int64_t n, cudaDataType dataTypeA, const void* A, int64_t lda,
                                             cudaDataType computeType, std::size_t* workspaceInBytesOnDevice,
                                             std::size_t* workspaceInBytesOnHost) {
  if (!handle) return CUSOLVER_STATUS_NOT_INITIALIZED;
  if (computeType != CUDA_R_32F) return CUSOLVER_STATUS_NOT_SUPPORTED;
  if (const auto s = check_square("cusolverDnXpotrf_bufferSize", uplo, n, dataTypeA, A, lda); s != CUSOLVER_STATUS_SUCCESS)
    return s;
  *workspaceInBytesOnDevice = workspace_bytes(n);
  *workspaceInBytesOnHost = 0;
  return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnXpotrf(cusolverDnHandle_t handle, cusolverDnParams_t, cublasFillMode_t uplo, int64_t n,
                                  cudaDataType dataTypeA, void* A, int64_t lda, cudaDataType computeType,
                                  void* bufferOnDevice, std::size_t workspaceInBytesOnDevice, void*, std::size_t,
                                  int* info) {
  if (!handle) return CUSOLVER_STATUS_NOT_INITIALIZED;
  if (computeType != CUDA_R_32F) return CUSOLVER_STATUS_NOT_SUPPORTED;
  if (const auto s = check_square("cusolverDnXpotrf", uplo, n, dataTypeA, A, lda); s != CUSOLVER_STATUS_SUCCESS) return s;
  if (const auto s = check_workspace("cusolverDnXpotrf", n, bufferOnDevice, workspaceInBytesOnDevice);
      s != CUSOLVER_STATUS_SUCCESS)
    return s;
  const char fill = uplo == CUBLAS_FILL_MODE_UPPER ? 'U' : 'L';
  const auto ln = static_cast<lapack_int>(n), llda = static_cast<lapack_int>(lda);
  float* a = static_cast<float*>(A);
  const lapack_int r =
      n == 0 ? 0
      : shardq_emu::device_numerics()
          ? via_double(a, n, lda, [&](double* d) { return LAPACKE_dpotrf(LAPACK_COL_MAJOR, fill, ln, d, llda); })
          : LAPACKE_spotrf(LAPACK_COL_MAJOR, fill, ln, a, llda);
  write_info("cusolverDnXpotrf", info, static_cast<int>(r));
  return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnXtrtri_bufferSize(cusolverDnHandle_t handle, cublasFillMode_t uplo, cublasDiagType_t,
                                             int64_t n, cudaDataType dataTypeA, void* A, int64_t lda,
                                             std::size_t* workspaceInBytesOnDevice, std::size_t* workspaceInBytesOnHost) {
  if (!handle) return CUSOLVER_STATUS_NOT_INITIALIZED;
  if (const auto s = check_square("cusolverDnXtrtri_bufferSize", uplo, n, dataTypeA, A, lda); s != CUSOLVER_STATUS_SUCCESS)
    return s;
  *workspaceInBytesOnDevice = workspace_bytes(n);
  *workspaceInBytesOnHost = 0;
  return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnXtrtri(cusolverDnHandle_t handle, cublasFillMode_t uplo, cublasDiagType_t diag, int64_t n,
                                  cudaDataType dataTypeA, void* A, int64_t lda, void* bufferOnDevice,
                                  std::size_t workspaceInBytesOnDevice, void*, std::size_t, int* devInfo) {
  if (!handle) return CUSOLVER_STATUS_NOT_INITIALIZED;
  if (const auto s = check_square("cusolverDnXtrtri", uplo, n, dataTypeA, A, lda); s != CUSOLVER_STATUS_SUCCESS) return s;
  if (const auto s = check_workspace("cusolverDnXtrtri", n, bufferOnDevice, workspaceInBytesOnDevice);
      s != CUSOLVER_STATUS_SUCCESS)
    return s;
  const char fill = uplo == CUBLAS_FILL_MODE_UPPER ? 'U' : 'L', unit = diag == CUBLAS_DIAG_UNIT ? 'U' : 'N';
  const auto ln = static_cast<lapack_int>(n), llda = static_cast<lapack_int>(lda);
  float* a = static_cast<float*>(A);
  const lapack_int r =
      n == 0 ? 0
      : shardq_emu::device_numerics()
          ? via_double(a, n, lda, [&](double* d) { return LAPACKE_dtrtri(LAPACK_COL_MAJOR, fill, unit, ln, d, llda); })
          : LAPACKE_strtri(LAPACK_COL_MAJOR, fill, unit, ln, a, llda);
  write_info("cusolverDnXtrtri", devInfo, static_cast<int>(r));
  return CUSOLVER_STATUS_SUCCESS;
}
