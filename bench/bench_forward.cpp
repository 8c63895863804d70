// Forward pass and Hessian accumulation throughput on a synthetic 1024-wide Llama layer
// (weights built in memory), next to OpenBLAS sgemm measured in the same run.
//   bench_forward [--benchmark_format=json]
// Each rate is reported as GFLOP/s and as pct_sgemm = its rate / the sgemm rate of a
// [2048 × 1024] · [1024 × 1024]ᵀ product (median of 7 runs at start-up). FLOPs counted:
//   layer forward: 2·n·(h·(q+2kv) + q·h + 3·h·I) for the linears + 2·2·Σ_visible·head_dim per
//                  head for attention (only the causal triangle, which is what is computed);
//   Hessian: n·d·(d+1) for the ssyrk of one micro-batch (upper triangle), plus the
//            fixed-point conversion of d(d+1)/2 partials (not counted as FLOPs).
// One correctness check per benchmark (finite outputs; Hessian diagonal against a double sum).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "kernels/cpu/blas.hpp"
#include "kernels/cpu/hessian.hpp"
#include "worker/forward.hpp"

namespace {

using namespace shardq;

std::vector<float> random_vector(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(static_cast<double>(rng() >> 11) * 0x1p-52 - 1.0);
  return v;
}

double sgemm_gflops() {
  const int64_t m = 2048, n = 1024, k = 1024;
  const auto a = random_vector(m * k, 1), b = random_vector(n * k, 2);
  std::vector<float> c(m * n);
  std::vector<double> rates;
  for (int rep = 0; rep < 8; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    cpu::gemm_nt(m, n, k, a.data(), b.data(), c.data());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rep > 0) rates.push_back(2.0 * m * n * k / s * 1e-9);  // rep 0 warms up
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

double& sgemm_rate() {
  static double rate = sgemm_gflops();
  return rate;
}

void report(benchmark::State& state, double flops_per_iter) {
  state.counters["GFLOP/s"] = benchmark::Counter(flops_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["sgemm_GFLOP/s"] = sgemm_rate();
}

void BM_sgemm(benchmark::State& state) {
  const int64_t m = 2048, n = 1024, k = 1024;
  const auto a = random_vector(m * k, 1), b = random_vector(n * k, 2);
  std::vector<float> c(m * n);
  for (auto _ : state) {
    cpu::gemm_nt(m, n, k, a.data(), b.data(), c.data());
    benchmark::DoNotOptimize(c.data());
  }
  report(state, 2.0 * m * n * k);
}

ModelConfig layer_config() {
  ModelConfig c;
  c.hidden_size = 1024;
  c.intermediate_size = 2816;
  c.num_layers = 1;
  c.num_heads = 16;
  c.num_kv_heads = 8;
  c.head_dim = 64;
  c.vocab_size = 32;
  c.max_position_embeddings = 4096;
  return c;
}

void BM_layer_forward(benchmark::State& state) {
  const ModelConfig c = layer_config();
  const LayerWeights w = layer_weights_random(c, 3);
  const int n_seq = static_cast<int>(state.range(0)), seq_len = static_cast<int>(state.range(1));
  const int64_t n = static_cast<int64_t>(n_seq) * seq_len;
  const auto input = random_vector(n * c.hidden_size, 4);
  std::vector<float> hidden;
  for (auto _ : state) {
    state.PauseTiming();
    hidden = input;
    state.ResumeTiming();
    layer_forward(c, w, hidden.data(), n_seq, seq_len);
    benchmark::DoNotOptimize(hidden.data());
  }
  if (!std::all_of(hidden.begin(), hidden.end(), [](float x) { return std::isfinite(x); }))
    state.SkipWithError("non-finite layer output");
  const double h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), inter = c.intermediate_size;
  const double linear = 2.0 * n * (h * (q + 2 * kv) + q * h + 3 * h * inter);
  const double visible = static_cast<double>(seq_len) * (seq_len + 1) / 2.0;
  const double attention = 4.0 * n_seq * visible * c.head_dim * c.num_heads;
  report(state, linear + attention);
  state.counters["pct_sgemm"] =
      benchmark::Counter((linear + attention) * 1e-9 / sgemm_rate() * 100.0, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_hessian_accumulate(benchmark::State& state) {
  const int64_t dim = state.range(0), n = state.range(1);
  const auto x = random_vector(n * dim, 5);
  cpu::HessianAccumulator acc(dim);
  for (auto _ : state) acc.add(x.data(), n);
  const Tensor h = acc.finalize();
  double diag0 = 0;
  for (int64_t t = 0; t < n; ++t) diag0 += static_cast<double>(x[t * dim]) * x[t * dim];
  diag0 *= 2.0 / static_cast<double>(n);
  if (std::abs(h.at(0, 0) - diag0) > 1e-4 * diag0) state.SkipWithError("Hessian diagonal differs from the double sum");
  const double flops = static_cast<double>(n) * dim * (dim + 1);
  report(state, flops);
  state.counters["pct_sgemm"] =
      benchmark::Counter(flops * 1e-9 / sgemm_rate() * 100.0, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_sgemm)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_layer_forward)->Args({4, 512})->Args({1, 2048})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_hessian_accumulate)->Args({1024, 2048})->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) {
  shardq::cpu::blas_select_kernels(argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
