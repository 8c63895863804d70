// The only place that calls CBLAS/LAPACKE directly: thin, row-major wrappers with the
// shapes shardq uses. Everything else goes through these.
#pragma once

#include <cstdint>
#include <string>

namespace shardq::cpu {

// C[m,n] = alpha * A[m,k] · B[n,k]ᵀ + beta * C  (activations times a HF weight: y = x Wᵀ)
void gemm_nt(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
             float alpha = 1.0f, float beta = 0.0f);
// C[m,n] = alpha * A[m,k] · B[k,n] + beta * C
void gemm_nn(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
             float alpha = 1.0f, float beta = 0.0f);
// C[m,n] = alpha * A[k,m]ᵀ · B[k,n] + beta * C
void gemm_tn(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
             float alpha = 1.0f, float beta = 0.0f);
// C[m,n] = alpha * op(A) · op(B) + beta * C with explicit row strides (lda, ldb, ldc), for
// sub-blocks of larger matrices (GPTQ's lazy-batch update reads a panel of H⁻¹'s factor).
// op(A) is [m,k] (A stored [k,m] when trans_a); op(B) is [k,n] (B stored [n,k] when trans_b).
void gemm_strided(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                  int64_t ldc);
// Upper triangle of C[n,n] += alpha * X[k,n]ᵀ · X[k,n]  (rank-k update; the Hessian's Σ xxᵀ)
void syrk_upper_tn(int64_t n, int64_t k, const float* x, float* c, float alpha, float beta);

// In-place Cholesky of a symmetric positive definite row-major n×n matrix: on success the
// upper triangle holds U with A = UᵀU and the function returns 0; otherwise the LAPACK info
// (> 0: the leading minor of that order is not positive definite).
int cholesky_upper(int64_t n, float* a);
int cholesky_upper(int64_t n, double* a);
// Inverse from the Cholesky factor in the upper triangle (potri); fills the upper triangle.
int cholesky_inverse_upper(int64_t n, float* a);
int cholesky_inverse_upper(int64_t n, double* a);

// In-place inverse of the upper triangular row-major n×n matrix in the upper triangle
// (trtri, non-unit diagonal); returns the LAPACK info (> 0: that diagonal element is zero).
int triangular_inverse_upper(int64_t n, float* a);
int triangular_inverse_upper(int64_t n, double* a);

// Threads the matrix products use (1 per MPI rank on a shared box). The products run as a
// fixed grid of 256 × 256 tiles, one single-threaded OpenBLAS call each (common/thread_pool.hpp),
// so their bits do not depend on this number. LAPACK calls run single-threaded.
void blas_set_threads(int n);
int blas_threads();

// The kernel set OpenBLAS chose when it loaded ("Haswell", "SkylakeX", ...). The products'
// bits depend on it, so the manifest records it per rank.
std::string blas_kernels();

// OpenBLAS up to 0.3.24 (Debian 12 ships 0.3.21) picks its kernels by CPU model number and,
// on Intel models it does not know (Sapphire and Emerald Rapids, Granite Rapids, new cores),
// falls back to the SSE3 "Prescott" set; 0.3.25 chooses by CPU features instead (OpenBLAS
// issue 4267, pull 4268). The choice is made when the library loads, before main, from
// OPENBLAS_CORETYPE. So when OpenBLAS fell back to Prescott on a CPU with AVX2 or AVX-512 and
// the environment names no kernel set, this sets OPENBLAS_CORETYPE to what 0.3.25 picks and
// re-executes the program in place (same pid, arguments and environment; before MPI_Init).
// Call it first in main. Returns when nothing needs to change, or when the exec failed (with
// one warning line on stderr; the program then runs on the Prescott kernels).
void blas_select_kernels(char** argv);

}  // namespace shardq::cpu
