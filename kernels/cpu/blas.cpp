#include "kernels/cpu/blas.hpp"

#include <cblas.h>
#include <lapacke.h>

namespace shardq::cpu {

void gemm_nt(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
             float alpha, float beta) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, alpha, a, k, b, k, beta, c, n);
}

void gemm_nn(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
             float alpha, float beta) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, alpha, a, k, b, n, beta, c, n);
}

void gemm_tn(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
             float alpha, float beta) {
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, k, alpha, a, m, b, n, beta, c, n);
}

void gemm_strided(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                  int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void syrk_upper_tn(int64_t n, int64_t k, const float* x, float* c, float alpha, float beta) {
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, n, k, alpha, x, n, beta, c, n);
}

int cholesky_upper(int64_t n, float* a) { return LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'U', n, a, n); }
int cholesky_upper(int64_t n, double* a) { return LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', n, a, n); }
int cholesky_inverse_upper(int64_t n, float* a) { return LAPACKE_spotri(LAPACK_ROW_MAJOR, 'U', n, a, n); }
int cholesky_inverse_upper(int64_t n, double* a) { return LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'U', n, a, n); }

int triangular_inverse_upper(int64_t n, float* a) {
  return LAPACKE_strtri(LAPACK_ROW_MAJOR, 'U', 'N', n, a, n);
}
int triangular_inverse_upper(int64_t n, double* a) {
  return LAPACKE_dtrtri(LAPACK_ROW_MAJOR, 'U', 'N', n, a, n);
}

void blas_set_threads(int n) { openblas_set_num_threads(n); }
int blas_threads() { return openblas_get_num_threads(); }

}  // namespace shardq::cpu
