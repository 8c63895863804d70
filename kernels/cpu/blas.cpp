#include "kernels/cpu/blas.hpp"

#include <cblas.h>
#include <lapacke.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "common/thread_pool.hpp"

namespace shardq::cpu {

namespace {

// OpenBLAS runs single-threaded; the tiles are spread over the worker threads instead
// (common/thread_pool.hpp). Every wrapper calls this before its first BLAS/LAPACK call.
void openblas_serial() {
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
}

// The fixed tile grid (thread_pool.hpp: the bits must not depend on the thread count).
// 256 × 256 tiles keep packing below 1% of a tile's flops and give enough tiles to share.
constexpr int64_t tile = 256;

int64_t tiles_of(int64_t n) { return (n + tile - 1) / tile; }

// C[m,n] = alpha op(A) op(B) + beta C, one single-threaded sgemm per tile of C.
void tiled_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  openblas_serial();
  const int64_t tm = tiles_of(m), tn = tiles_of(n);
  parallel_for(static_cast<int>(tm * tn), [&](int t) {
    const int64_t i0 = (t / tn) * tile, j0 = (t % tn) * tile;
    const int64_t mi = std::min(tile, m - i0), nj = std::min(tile, n - j0);
    // Row i of op(A) is row i of A, or column i when A is stored transposed; likewise B.
    const float* a_tile = trans_a ? a + i0 : a + i0 * lda;
    const float* b_tile = trans_b ? b + j0 * ldb : b + j0;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, mi, nj, k,
                alpha, a_tile, lda, b_tile, ldb, beta, c + i0 * ldc + j0, ldc);
  });
}

}  // namespace

void gemm_nt(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
             float alpha, float beta) {
  tiled_gemm(false, true, m, n, k, alpha, a, k, b, k, beta, c, n);
}

void gemm_nn(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
             float alpha, float beta) {
  tiled_gemm(false, false, m, n, k, alpha, a, k, b, n, beta, c, n);
}

void gemm_tn(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
             float alpha, float beta) {
  tiled_gemm(true, false, m, n, k, alpha, a, m, b, n, beta, c, n);
}

void gemm_strided(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                  int64_t ldc) {
  tiled_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

namespace {

// Upper triangle of C[n,n] (row stride ldc) = alpha Xᵀ X + beta C for X[k,n] (row stride ldx),
// by tiles: ssyrk on the diagonal tiles, sgemm (X_iᵀ X_j) above them.
void tiled_syrk_upper_tn(int64_t n, int64_t k, const float* x, int64_t ldx, float* c, int64_t ldc, float alpha,
                         float beta) {
  if (n <= 0) return;
  openblas_serial();
  const int64_t tn = tiles_of(n);
  std::vector<std::pair<int64_t, int64_t>> blocks;
  for (int64_t i = 0; i < tn; ++i) {
    for (int64_t j = i; j < tn; ++j) blocks.emplace_back(i, j);
  }
  parallel_for(static_cast<int>(blocks.size()), [&](int t) {
    const int64_t i0 = blocks[static_cast<size_t>(t)].first * tile, j0 = blocks[static_cast<size_t>(t)].second * tile;
    const int64_t ni = std::min(tile, n - i0), nj = std::min(tile, n - j0);
    if (i0 == j0) {
      cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, ni, k, alpha, x + i0, ldx, beta, c + i0 * ldc + i0, ldc);
    } else {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ni, nj, k, alpha, x + i0, ldx, x + j0, ldx, beta,
                  c + i0 * ldc + j0, ldc);
    }
  });
}

}  // namespace

void syrk_upper_tn(int64_t n, int64_t k, const float* x, float* c, float alpha, float beta) {
  tiled_syrk_upper_tn(n, k, x, n, c, n, alpha, beta);
}

// Blocked right-looking Cholesky on the tile grid (A = UᵀU, row-major upper): spotrf on the
// diagonal tile, the tile row to its right solved with U_kkᵀ (strsm per tile), the trailing
// upper triangle updated by tiles. Each step is one single-threaded call per tile, so the
// factor's bits do not depend on the thread count (LAPACK's threaded potrf: they do).
int cholesky_upper(int64_t n, float* a) {
  openblas_serial();
  for (int64_t k0 = 0; k0 < n; k0 += tile) {
    const int64_t kb = std::min(tile, n - k0);
    float* akk = a + k0 * n + k0;
    const int info = LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'U', kb, akk, n);
    if (info != 0) return info > 0 ? static_cast<int>(k0 + info) : info;
    const int64_t r0 = k0 + kb, rest = n - r0;
    if (rest == 0) break;
    parallel_for(static_cast<int>(tiles_of(rest)), [&](int t) {
      const int64_t c0 = r0 + t * tile, cb = std::min(tile, n - c0);
      cblas_strsm(CblasRowMajor, CblasLeft, CblasUpper, CblasTrans, CblasNonUnit, kb, cb, 1.0f, akk, n,
                  a + k0 * n + c0, n);
    });
    tiled_syrk_upper_tn(rest, kb, a + k0 * n + r0, n, a + r0 * n + r0, n, -1.0f, 1.0f);
  }
  return 0;
}

// The remaining LAPACK calls run on OpenBLAS single-threaded too: their bits must not
// depend on the thread count either.
int cholesky_upper(int64_t n, double* a) {
  openblas_serial();
  return LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', n, a, n);
}
int cholesky_inverse_upper(int64_t n, float* a) {
  openblas_serial();
  return LAPACKE_spotri(LAPACK_ROW_MAJOR, 'U', n, a, n);
}
int cholesky_inverse_upper(int64_t n, double* a) {
  openblas_serial();
  return LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'U', n, a, n);
}

// Columns [c0, c1) of U⁻¹ are zero below row c1, and their top c1 rows solve U[:c1,:c1] X = I:
// one strsm per column tile, independent of each other (fixed grid, any thread count).
int triangular_inverse_upper(int64_t n, float* a) {
  openblas_serial();
  for (int64_t i = 0; i < n; ++i) {
    if (a[i * n + i] == 0.0f) return static_cast<int>(i + 1);
  }
  std::vector<float> inv(static_cast<size_t>(n * n), 0.0f);
  parallel_for(static_cast<int>(tiles_of(n)), [&](int t) {
    const int64_t c0 = t * tile, c1 = std::min(n, c0 + tile);
    for (int64_t i = c0; i < c1; ++i) inv[static_cast<size_t>(i * n + i)] = 1.0f;
    cblas_strsm(CblasRowMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, c1, c1 - c0, 1.0f, a, n,
                inv.data() + c0, n);
  });
  for (int64_t i = 0; i < n; ++i) std::copy(inv.begin() + i * n + i, inv.begin() + (i + 1) * n, a + i * n + i);
  return 0;
}
int triangular_inverse_upper(int64_t n, double* a) {
  openblas_serial();
  return LAPACKE_dtrtri(LAPACK_ROW_MAJOR, 'U', 'N', n, a, n);
}

void blas_set_threads(int n) { set_worker_threads(n); }
int blas_threads() { return worker_threads(); }

std::string blas_kernels() { return openblas_get_corename(); }

namespace {

// OpenBLAS 0.3.25's feature-based choice for a CPU it does not know (driver/others/dynamic.c).
// __builtin_cpu_supports also checks that the OS saves the AVX/AVX-512 registers (XCR0).
const char* kernels_for_cpu_features() {
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd"))
    return __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  if (__builtin_cpu_supports("avx")) return "Sandybridge";
  return nullptr;
}

}  // namespace

void blas_select_kernels(char** argv) {
#if defined(__x86_64__)
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // the user's choice stands
  if (std::strcmp(openblas_get_corename(), "Prescott") != 0) return;
  const char* kernels = kernels_for_cpu_features();
  if (kernels == nullptr) return;  // a CPU for which Prescott is right
  setenv("OPENBLAS_CORETYPE", kernels, 1);
  // The path /proc/self/exe names (what valgrind reports for its client), then the link itself
  // (which still works when the file has since been replaced).
  char exe[4096];
  if (const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1); n > 0) {
    exe[n] = '\0';
    execv(exe, argv);
  }
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "warning: OpenBLAS chose its Prescott (SSE3) kernels for this CPU and re-executing with "
                       "OPENBLAS_CORETYPE=%s failed (execv /proc/self/exe: %s); products run 2-3x slower\n",
               kernels, std::strerror(errno));
  unsetenv("OPENBLAS_CORETYPE");
#else
  (void)argv;
#endif
}

}  // namespace shardq::cpu
