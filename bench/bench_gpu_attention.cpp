// Causal GQA attention on the GPU (kernels/cuda/forward_ops.hpp): the tiled flash-attention
// kernel behind attention_causal against the rowwise reference kernel, next to the device's
// own cuBLAS sgemm measured in the same run.
//
// Case: one calibration window of 2048 tokens at Llama-3-8B's attention (32 query heads on
// 8 kv heads, head_dim 128), q, k uniform in [-2, 2] and v in [-1, 1], uploaded outside the
// timed loop; each iteration is one kernel timed with CUDA events after a warm-up launch.
// Counted flops per call: QKᵀ and P·V over the causal half, 2 · 2 · seq_len²/2 · head_dim ·
// n_heads (34.4 GFLOP). After the runs, one JSON line with median and min times, GFLOP/s,
// the tiled/rowwise speedup, the time the sequential schedule's 8192 calls (128 micro-batches
// × 32 layers × 2 passes) would spend in attention, and a correctness check: the tiled output
// within 1e-5 + 1e-4·|x| of the rowwise one everywhere.
// Run: build-cuda/bench/bench_gpu_attention   (prints a skip line and exits 0 without a CUDA
// device or in a CPU-only build).
#include <cstdio>

#ifndef SHARDQ_HAVE_CUDA
int main() {
  std::printf("{\"bench\": \"gpu_attention\", \"skipped\": \"built without CUDA\"}\n");
  return 0;
}
#else

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "bench/gpu_bench.hpp"
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/forward_ops.hpp"

namespace {

using namespace shardq::bench;  // timing (gpu_bench.hpp)
namespace cuda = shardq::cuda;

constexpr int n_seq = 1, seq_len = 2048, n_heads = 32, n_kv_heads = 8, head_dim = 128;
constexpr int64_t n_tokens = static_cast<int64_t>(n_seq) * seq_len;
constexpr double attention_flops = 2.0 * 2.0 * seq_len * (seq_len / 2.0) * head_dim * n_heads * n_seq;
constexpr int sgemm_n = 4096;

std::vector<float> random_vector(std::size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

struct Inputs {
  cuda::DeviceBuffer<float> q, k, v, out_tiled, out_rowwise;
};

Inputs& inputs() {
  static Inputs in{cuda::to_device(random_vector(n_tokens * n_heads * head_dim, 1, -2.0f, 2.0f)),
                   cuda::to_device(random_vector(n_tokens * n_kv_heads * head_dim, 2, -2.0f, 2.0f)),
                   cuda::to_device(random_vector(n_tokens * n_kv_heads * head_dim, 3, -1.0f, 1.0f)),
                   cuda::DeviceBuffer<float>(n_tokens * n_heads * head_dim),
                   cuda::DeviceBuffer<float>(n_tokens * n_heads * head_dim)};
  return in;
}


void BM_cuda_sgemm(benchmark::State& state) {
  const std::size_t n2 = static_cast<std::size_t>(sgemm_n) * sgemm_n;
  const cuda::DeviceBuffer<float> a = cuda::to_device(random_vector(n2, 4, -1.0f, 1.0f));
  const cuda::DeviceBuffer<float> b = cuda::to_device(random_vector(n2, 5, -1.0f, 1.0f));
  cuda::DeviceBuffer<float> c(n2);
  cuda::unique_stream stream = cuda::make_stream();
  cuda::unique_cublas h = cuda::make_cublas(stream.get());
  const float one = 1.0f, zero = 0.0f;
  auto launch = [&] {
    SHARDQ_CUDA_CHECK(cublasSgemm(h.get(), CUBLAS_OP_N, CUBLAS_OP_N, sgemm_n, sgemm_n, sgemm_n, &one, a.get(), sgemm_n,
                                  b.get(), sgemm_n, &zero, c.get(), sgemm_n));
  };
  launch();
  for (auto _ : state) state.SetIterationTime(device_seconds("sgemm", stream.get(), launch));
  state.counters["TFLOP/s"] = 2.0 * sgemm_n * sgemm_n * sgemm_n / minimum(seconds["sgemm"]) / 1e12;
}

template <bool kTiled>
void BM_cuda_attention(benchmark::State& state) {
  const std::string name = kTiled ? "tiled" : "rowwise";
  Inputs& in = inputs();
  float* out = kTiled ? in.out_tiled.get() : in.out_rowwise.get();
  cuda::unique_stream stream = cuda::make_stream();
  auto launch = [&] {
    (kTiled ? cuda::attention_causal : cuda::attention_causal_rowwise)(in.q.get(), in.k.get(), in.v.get(), out, n_seq,
                                                                       seq_len, n_heads, n_kv_heads, head_dim,
                                                                       stream.get());
  };
  launch();
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  for (auto _ : state) state.SetIterationTime(device_seconds(name, stream.get(), launch));
  state.counters["GFLOP/s"] = attention_flops / minimum(seconds[name]) / 1e9;
}

BENCHMARK(BM_cuda_sgemm)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(10);
BENCHMARK_TEMPLATE(BM_cuda_attention, true)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(20);
BENCHMARK_TEMPLATE(BM_cuda_attention, false)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);

}  // namespace

int main(int argc, char** argv) {
  if (cuda::device_count() == 0) {
    std::printf("{\"bench\": \"gpu_attention\", \"skipped\": \"no CUDA device\"}\n");
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  inputs();  // outside every timed region
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  // Correctness of what was timed (both outputs are from the last timed launch).
  bool ok = !seconds["tiled"].empty() && !seconds["rowwise"].empty();
  double max_diff = 0.0;
  if (ok) {
    const std::vector<float> tiled = inputs().out_tiled.to_host(), rowwise = inputs().out_rowwise.to_host();
    for (std::size_t i = 0; i < tiled.size(); ++i) {
      const double diff = std::fabs(static_cast<double>(tiled[i]) - rowwise[i]);
      max_diff = std::max(max_diff, diff);
      if (!(diff <= 1e-5 + 1e-4 * std::fabs(static_cast<double>(rowwise[i])))) ok = false;
    }
  }

  const double t_tiled = median(seconds["tiled"]), t_rowwise = median(seconds["rowwise"]);
  std::printf("{\"bench\": \"gpu_attention\", \"device\": \"%s\", \"tiled_path\": %s",
              cuda::device_description().c_str(), cuda::attention_tiled_available(head_dim) ? "true" : "false");
  std::printf(", \"shape\": \"%dx%d tokens, %d/%d heads, head_dim %d\", \"gflop_per_call\": %.2f", n_seq, seq_len,
              n_heads, n_kv_heads, head_dim, attention_flops / 1e9);
  for (const auto& [name, s] : seconds)
    std::printf(", \"%s_median_ms\": %.4f, \"%s_min_ms\": %.4f", name.c_str(), 1e3 * median(s), name.c_str(),
                1e3 * minimum(s));
  if (t_tiled > 0 && t_rowwise > 0) {
    std::printf(", \"tiled_gflops\": %.1f, \"rowwise_gflops\": %.1f, \"speedup\": %.2f", attention_flops / t_tiled / 1e9,
                attention_flops / t_rowwise / 1e9, t_rowwise / t_tiled);
    std::printf(", \"tiled_8192_calls_s\": %.2f, \"rowwise_8192_calls_s\": %.2f", 8192 * t_tiled, 8192 * t_rowwise);
  }
  const double sg = minimum(seconds["sgemm"]);
  if (sg > 0) std::printf(", \"sgemm_tflops\": %.2f", 2.0 * sgemm_n * sgemm_n * sgemm_n / sg / 1e12);
  std::printf(", \"max_abs_diff_tiled_rowwise\": %.3g, \"check\": \"%s\"}\n", max_diff, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}

#endif  // SHARDQ_HAVE_CUDA
