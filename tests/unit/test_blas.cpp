// The tiled BLAS wrappers (kernels/cpu/blas.hpp): every product equals a double-precision
// reference to float rounding, and its bits do not depend on the number of worker threads
// (the reason for the fixed tile grid; OpenBLAS's own threading changes them). And the
// kernel set: OpenBLAS's Prescott fallback is replaced on AVX2/AVX-512 CPUs, a kernel set the
// user names is kept, and the re-executed program sees the same arguments.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/blas.hpp"
#include "support/test_support.hpp"

namespace shardq {
namespace {

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Restores the thread count of the process after a test changes it.
struct ThreadsGuard {
  int saved = cpu::blas_threads();
  ~ThreadsGuard() { cpu::blas_set_threads(saved); }
};

// op(A)[i,l] and op(B)[l,j] from row-major storage, as the wrappers document them.
double product(bool ta, bool tb, const std::vector<float>& a, int64_t lda, const std::vector<float>& b, int64_t ldb,
               int64_t i, int64_t j, int64_t k) {
  double s = 0;
  for (int64_t l = 0; l < k; ++l) {
    const double x = ta ? a[static_cast<size_t>(l * lda + i)] : a[static_cast<size_t>(i * lda + l)];
    const double y = tb ? b[static_cast<size_t>(j * ldb + l)] : b[static_cast<size_t>(l * ldb + j)];
    s += x * y;
  }
  return s;
}

TEST(TiledBlas, GemmMatchesReferenceAndIsTheSameForAnyThreadCount) {
  ThreadsGuard guard;
  // Shapes straddling the 256 tile edge, and a k of 1.
  for (const auto& [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{300, 517, 70}, {1, 257, 33}, {513, 3, 1}}) {
    for (const bool ta : {false, true}) {
      for (const bool tb : {false, true}) {
        const int64_t lda = ta ? m : k, ldb = tb ? k : n;
        const auto a = random_vector(static_cast<size_t>(m * k), 1), b = random_vector(static_cast<size_t>(k * n), 2);
        const auto c0 = random_vector(static_cast<size_t>(m * n), 3);
        std::vector<std::vector<float>> results;
        for (int threads : {1, 2, 3, 5}) {
          cpu::blas_set_threads(threads);
          std::vector<float> c = c0;
          cpu::gemm_strided(ta, tb, m, n, k, 0.5f, a.data(), lda, b.data(), ldb, 2.0f, c.data(), n);
          results.push_back(c);
        }
        for (size_t r = 1; r < results.size(); ++r)
          EXPECT_EQ(results[r], results[0]) << "thread count changed the bits: " << m << "x" << n << "x" << k;
        for (int64_t i = 0; i < m; i += 7) {
          for (int64_t j = 0; j < n; j += 5) {
            const double want = 0.5 * product(ta, tb, a, lda, b, ldb, i, j, k) + 2.0 * c0[static_cast<size_t>(i * n + j)];
            EXPECT_NEAR(results[0][static_cast<size_t>(i * n + j)], want, 1e-4 * (1.0 + std::sqrt(static_cast<double>(k))));
          }
        }
      }
    }
  }
}

TEST(TiledBlas, SyrkUpperMatchesReferenceAndIsTheSameForAnyThreadCount) {
  ThreadsGuard guard;
  const int64_t n = 600, k = 45;
  const auto x = random_vector(static_cast<size_t>(k * n), 4);
  const auto c0 = random_vector(static_cast<size_t>(n * n), 5);
  std::vector<std::vector<float>> results;
  for (int threads : {1, 2, 4}) {
    cpu::blas_set_threads(threads);
    std::vector<float> c = c0;
    cpu::syrk_upper_tn(n, k, x.data(), c.data(), 1.0f, 1.0f);
    results.push_back(c);
  }
  EXPECT_EQ(results[1], results[0]);
  EXPECT_EQ(results[2], results[0]);
  for (int64_t i = 0; i < n; i += 11) {
    for (int64_t j = 0; j < n; j += 13) {
      const float got = results[0][static_cast<size_t>(i * n + j)];
      if (j < i) {
        EXPECT_EQ(got, c0[static_cast<size_t>(i * n + j)]) << "lower triangle touched at " << i << "," << j;
      } else {
        double s = c0[static_cast<size_t>(i * n + j)];
        for (int64_t l = 0; l < k; ++l) s += static_cast<double>(x[static_cast<size_t>(l * n + i)]) * x[static_cast<size_t>(l * n + j)];
        EXPECT_NEAR(got, s, 1e-3);
      }
    }
  }
}

// A well-conditioned SPD matrix G Gᵀ / k + I of size n.
std::vector<float> random_spd(int64_t n, uint32_t seed) {
  const int64_t k = n + 10;
  const auto g = random_vector(static_cast<size_t>(n * k), seed);
  std::vector<float> a(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = i == j ? 1.0 : 0.0;
      for (int64_t l = 0; l < k; ++l) s += static_cast<double>(g[static_cast<size_t>(i * k + l)]) * g[static_cast<size_t>(j * k + l)] / k;
      a[static_cast<size_t>(i * n + j)] = static_cast<float>(s);
    }
  }
  return a;
}

TEST(TiledBlas, CholeskyAndTriangularInverseMatchReferenceForAnyThreadCount) {
  ThreadsGuard guard;
  const int64_t n = 600;  // three tiles, the last one partial
  const auto a = random_spd(n, 7);
  std::vector<std::vector<float>> factors, inverses;
  for (int threads : {1, 2, 3}) {
    cpu::blas_set_threads(threads);
    std::vector<float> u = a;
    ASSERT_EQ(cpu::cholesky_upper(n, u.data()), 0);
    factors.push_back(u);
    ASSERT_EQ(cpu::triangular_inverse_upper(n, u.data()), 0);
    inverses.push_back(u);
  }
  for (size_t r = 1; r < factors.size(); ++r) {
    EXPECT_EQ(factors[r], factors[0]) << "the Cholesky factor changed with the thread count";
    EXPECT_EQ(inverses[r], inverses[0]) << "the triangular inverse changed with the thread count";
  }
  const std::vector<float>& u = factors[0];
  const std::vector<float>& v = inverses[0];
  auto at = [n](const std::vector<float>& m, int64_t i, int64_t j) { return j >= i ? static_cast<double>(m[static_cast<size_t>(i * n + j)]) : 0.0; };
  for (int64_t i = 0; i < n; i += 17) {
    for (int64_t j = i; j < n; j += 19) {
      double utu = 0, uv = 0;
      for (int64_t l = 0; l <= std::min(i, j); ++l) utu += at(u, l, i) * at(u, l, j);
      for (int64_t l = i; l <= j; ++l) uv += at(u, i, l) * at(v, l, j);
      EXPECT_NEAR(utu, a[static_cast<size_t>(i * n + j)], 1e-3) << i << "," << j;
      EXPECT_NEAR(uv, i == j ? 1.0 : 0.0, 1e-4) << i << "," << j;
    }
  }
  // Not positive definite: the order of the failing leading minor, as LAPACK reports it.
  std::vector<float> bad = a;
  bad[static_cast<size_t>(300 * n + 300)] = -1.0f;
  EXPECT_EQ(cpu::cholesky_upper(n, bad.data()), 301);
  std::vector<float> singular = factors[0];
  singular[static_cast<size_t>(5 * n + 5)] = 0.0f;
  EXPECT_EQ(cpu::triangular_inverse_upper(n, singular.data()), 6);
}


bool cpu_has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

// The kernel set `shardq --version` reports, run under `env_prefix` (an `env ...` command).
std::string version_kernels(const std::string& env_prefix) {
  const test::CommandResult r = test::run_command(env_prefix + " " + test::shardq_bin() + " --version");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const std::string tag = "OpenBLAS kernels: ";
  const size_t at = r.out.find(tag), end = r.out.find(')', at);
  if (at == std::string::npos || end == std::string::npos) {
    ADD_FAILURE() << "no kernel set in: " << r.out;
    return "";
  }
  return r.out.substr(at + tag.size(), end - at - tag.size());
}

TEST(BlasKernels, PrescottFallbackIsReplacedOnAvx2Cpus) {
  if (!cpu_has_avx2()) {
    GTEST_SKIP() << "no AVX2 and FMA: Prescott can be OpenBLAS's right choice here";
  }
  EXPECT_NE(version_kernels("env -u OPENBLAS_CORETYPE"), "Prescott");
  // This test binary chose its kernels the same way (tests/support/test_main.cpp).
  const char* user = std::getenv("OPENBLAS_CORETYPE");
  if (user == nullptr || std::string(user) != "Prescott") {
    EXPECT_NE(cpu::blas_kernels(), "Prescott");
  }
}

TEST(BlasKernels, AKernelSetTheUserNamesIsKept) {
  EXPECT_EQ(version_kernels("env OPENBLAS_CORETYPE=Prescott"), "Prescott");
  if (cpu_has_avx2()) {
    EXPECT_EQ(version_kernels("env OPENBLAS_CORETYPE=Haswell"), "Haswell");
  }
}

TEST(BlasKernels, TheReexecutedProgramSeesTheSameArgumentsAndEnvironment) {
  // `shardq info` prints the model's tensor table from its arguments and SHARDQ_LOG from the
  // environment: a re-exec that lost either would print something else.
  const test::TempDir dir("blas-kernels");
  const std::string model = (dir / "model").string();
  const test::CommandResult synth =
      test::run_command(test::shardq_bin() + " synth --layers 1 --hidden 64 --intermediate 128 --heads 4 --kv-heads 2 "
                        "--vocab 256 --output '" + model + "'");
  ASSERT_EQ(synth.exit_code, 0) << synth.err;
  const std::string args = std::string(" ") + test::shardq_bin() + " info '" + model + "' --json";
  const std::string chosen = version_kernels("env -u OPENBLAS_CORETYPE");
  const test::CommandResult direct = test::run_command("env SHARDQ_LOG=warn OPENBLAS_CORETYPE=" + chosen + args);
  const test::CommandResult via_exec = test::run_command("env -u OPENBLAS_CORETYPE SHARDQ_LOG=warn" + args);
  ASSERT_EQ(direct.exit_code, 0) << direct.err;
  ASSERT_EQ(via_exec.exit_code, 0) << via_exec.err;
  EXPECT_NE(direct.out.find("\"tensors\""), std::string::npos) << direct.out;
  EXPECT_EQ(via_exec.out, direct.out);
  EXPECT_EQ(via_exec.err, direct.err);
}

}  // namespace
}  // namespace shardq
