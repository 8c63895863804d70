// The matmul precisions of the CUDA tier (kernels/cuda/matmul.hpp) on one calibration
// micro-batch at Llama-3-8B's layer shapes, next to each other in the same run, to choose the
// precision per phase (issue 10) from measured cost and measured error.
//
// Cases, per precision (fp32, tf32x3, tf32, bf16), 2048 tokens, hidden 4096, q 4096, kv 1024,
// MLP 14336, inputs N(0, 1) and weights N(0, 0.02²) uploaded outside the timed loop:
//   linears  the seven linears of one layer forward (q, k, v, o, gate, up, down), the weights'
//            tf32x3 split made once as the layer forward keeps it (Tf32SplitCache)
//   hessian  the four Hessian partials of one micro-batch (dims 4096, 4096, 4096, 14336)
//            through cuda::HessianPartial, what HessianAccumulatorCuda runs (syrk for fp32,
//            gemms of the lower triangle for the others; the fixed-point add not included);
//            and cublasSsyrk on a TF32-math handle, to see whether syrk reaches the tensor cores
// Each iteration is timed with CUDA events. After the runs, one JSON line with median and min
// times, TFLOP/s (counted as 2·m·n·k per gemm, syrk n·d²: HessianPartial::flops), the time the
// e2e job's 8192 layer forwards (128 micro-batches × 32 layers × 2 passes) and 4096 Hessian
// partials would take, and each precision's largest relative deviation from fp32 on q_proj's
// output (|y − y_fp32| / max|y_fp32|).
// Run: build-cuda/bench/bench_gpu_matmul   (prints a skip line and exits 0 without a CUDA
// device or in a CPU-only build).
#include <cstdio>

#ifndef SHARDQ_HAVE_CUDA
int main() {
  std::printf("{\"bench\": \"gpu_matmul\", \"skipped\": \"built without CUDA\"}\n");
  return 0;
}
#else

#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "bench/bench_inputs.hpp"
#include "bench/gpu_bench.hpp"
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/hessian.hpp"
#include "kernels/cuda/matmul.hpp"

namespace {

using namespace shardq::bench;  // timing (gpu_bench.hpp), inputs (bench_inputs.hpp)
namespace cuda = shardq::cuda;
using cuda::matmul_precision;

constexpr int64_t n_tokens = 2048, hidden = 4096, q_dim = 4096, kv_dim = 1024, mlp = 14336;
struct LinearShape {
  const char* name;
  int64_t out, in;
};
constexpr std::array<LinearShape, 7> linears{{{"q_proj", q_dim, hidden},
                                              {"k_proj", kv_dim, hidden},
                                              {"v_proj", kv_dim, hidden},
                                              {"o_proj", hidden, q_dim},
                                              {"gate_proj", mlp, hidden},
                                              {"up_proj", mlp, hidden},
                                              {"down_proj", hidden, mlp}}};
constexpr std::array<int64_t, 4> hessian_dims{hidden, q_dim, hidden, mlp};
constexpr std::array<matmul_precision, 4> precisions{matmul_precision::fp32, matmul_precision::tf32x3,
                                                     matmul_precision::tf32, matmul_precision::bf16};

double linear_flops() {
  double f = 0.0;
  for (const LinearShape& l : linears) f += 2.0 * n_tokens * l.out * l.in;
  return f;
}
double hessian_flops(matmul_precision p) {
  double f = 0.0;
  for (const int64_t d : hessian_dims) f += cuda::HessianPartial::flops(d, n_tokens, p);
  return f;
}

struct Inputs {
  cuda::DeviceBuffer<float> x_hidden, x_mlp;  // [n_tokens, hidden], [n_tokens, mlp]
  std::array<cuda::DeviceBuffer<float>, 7> w;
  cuda::DeviceBuffer<float> y;        // the largest output, [n_tokens, mlp]
  cuda::DeviceBuffer<float> partial;  // [mlp, mlp]
};

Inputs& inputs() {
  static Inputs in = [] {
    Inputs i;
    i.x_hidden = cuda::to_device(random_normal(n_tokens * hidden, 1, 1.0f));
    i.x_mlp = cuda::to_device(random_normal(n_tokens * mlp, 2, 1.0f));
    for (std::size_t l = 0; l < linears.size(); ++l)
      i.w[l] = cuda::to_device(random_normal(linears[l].out * linears[l].in, 10 + static_cast<uint32_t>(l), 0.02f));
    i.y = cuda::DeviceBuffer<float>(n_tokens * mlp);
    i.partial = cuda::DeviceBuffer<float>(mlp * mlp);
    return i;
  }();
  return in;
}

// The micro-batch's activations of width `dim` (the input of a linear or a Hessian).
const float* input_of(const Inputs& in, int64_t dim) { return dim == mlp ? in.x_mlp.get() : in.x_hidden.get(); }

std::map<std::string, std::vector<float>> q_outputs;  // q_proj's output per precision

template <int kPrecision>
void BM_linears(benchmark::State& state) {
  const matmul_precision p = precisions[kPrecision];
  const std::string name = std::string("linears_") + cuda::to_string(p);
  Inputs& in = inputs();
  cuda::unique_stream stream = cuda::make_stream();
  cuda::Matmul mm(stream.get(), p);
  std::array<cuda::Tf32SplitCache, 7> splits;
  // One linear as LayerForwardCuda::linear_forward runs it (row-major y = x · Wᵀ).
  auto linear = [&](std::size_t l) {
    const LinearShape& s = linears[l];
    const float* x = input_of(in, s.in);
    const cuda::MatmulOperand w =
        splits[l].operand(in.w[l].get(), static_cast<std::size_t>(s.out * s.in), p, stream.get());
    mm.gemm(CUBLAS_OP_T, CUBLAS_OP_N, s.out, n_tokens, s.in, 1.0f, w, s.in, {x}, s.in, 0.0f, in.y.get(), s.out);
  };
  auto launch = [&] {
    for (std::size_t l = 0; l < linears.size(); ++l) linear(l);
  };
  launch();  // warm-up; also makes the weight splits, outside the timed loop as in the job
  for (auto _ : state) state.SetIterationTime(device_seconds(name, stream.get(), launch));
  linear(0);
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  std::vector<float> q(static_cast<std::size_t>(n_tokens * q_dim));
  in.y.download(q.data(), q.size());
  q_outputs[cuda::to_string(p)] = std::move(q);
  state.counters["TFLOP/s"] = linear_flops() / minimum(seconds[name]) / 1e12;
}

template <int kPrecision>
void BM_hessian(benchmark::State& state) {
  const matmul_precision p = precisions[kPrecision];
  const std::string name = std::string("hessian_") + cuda::to_string(p);
  Inputs& in = inputs();
  cuda::unique_stream stream = cuda::make_stream();
  cuda::HessianPartial partial(stream.get(), p);
  auto launch = [&] {
    for (const int64_t d : hessian_dims) partial.compute(input_of(in, d), n_tokens, d, in.partial.get());
  };
  launch();
  for (auto _ : state) state.SetIterationTime(device_seconds(name, stream.get(), launch));
  state.counters["TFLOP/s"] = hessian_flops(p) / minimum(seconds[name]) / 1e12;
}

// cublasSsyrk on a handle in TF32 tensor-op math: whether cuBLAS runs syrk on the tensor cores
// (then a tf32 Hessian would need half the products of the gemm blocks HessianPartial runs).
void BM_hessian_syrk_tf32_math(benchmark::State& state) {
  Inputs& in = inputs();
  cuda::unique_stream stream = cuda::make_stream();
  cuda::unique_cublas syrk = cuda::make_cublas(stream.get());
  SHARDQ_CUDA_CHECK(cublasSetMathMode(syrk.get(), CUBLAS_TF32_TENSOR_OP_MATH));
  auto launch = [&] {
    const float one = 1.0f, zero = 0.0f;
    for (const int64_t d : hessian_dims)
      SHARDQ_CUDA_CHECK(cublasSsyrk(syrk.get(), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, static_cast<int>(d),
                                    static_cast<int>(n_tokens), &one, input_of(in, d), static_cast<int>(d), &zero,
                                    in.partial.get(), static_cast<int>(d)));
  };
  launch();
  for (auto _ : state) state.SetIterationTime(device_seconds("hessian_syrk_tf32_math", stream.get(), launch));
  state.counters["TFLOP/s"] = hessian_flops(matmul_precision::fp32) / minimum(seconds["hessian_syrk_tf32_math"]) / 1e12;
}

BENCHMARK_TEMPLATE(BM_linears, 0)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(10);
BENCHMARK_TEMPLATE(BM_linears, 1)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(10);
BENCHMARK_TEMPLATE(BM_linears, 2)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(10);
BENCHMARK_TEMPLATE(BM_linears, 3)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(10);
BENCHMARK_TEMPLATE(BM_hessian, 0)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(10);
BENCHMARK_TEMPLATE(BM_hessian, 1)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(10);
BENCHMARK_TEMPLATE(BM_hessian, 2)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(10);
BENCHMARK_TEMPLATE(BM_hessian, 3)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(10);
BENCHMARK(BM_hessian_syrk_tf32_math)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(10);

}  // namespace

int main(int argc, char** argv) {
  if (cuda::device_count() == 0) {
    std::printf("{\"bench\": \"gpu_matmul\", \"skipped\": \"no CUDA device\"}\n");
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  inputs();  // outside every timed region
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  std::printf("{\"bench\": \"gpu_matmul\", \"device\": \"%s\", \"tokens\": %lld", cuda::device_description().c_str(),
              static_cast<long long>(n_tokens));
  const std::vector<float>& ref = q_outputs["fp32"];
  double ref_max = 0.0;
  for (const float v : ref) ref_max = std::max(ref_max, static_cast<double>(std::fabs(v)));
  for (const matmul_precision p : precisions) {
    const std::string n = cuda::to_string(p);
    const double tl = median(seconds["linears_" + n]), th = median(seconds["hessian_" + n]);
    std::printf(", \"%s\": {\"linears_median_ms\": %.3f, \"linears_min_ms\": %.3f, \"linears_tflops\": %.1f", n.c_str(),
                1e3 * tl, 1e3 * minimum(seconds["linears_" + n]), tl > 0 ? linear_flops() / tl / 1e12 : 0.0);
    std::printf(", \"hessian_median_ms\": %.3f, \"hessian_min_ms\": %.3f, \"hessian_tflops\": %.1f", 1e3 * th,
                1e3 * minimum(seconds["hessian_" + n]), th > 0 ? hessian_flops(p) / th / 1e12 : 0.0);
    std::printf(", \"e2e_forward_8192_s\": %.1f, \"e2e_hessian_4096_s\": %.1f", 8192 * tl, 4096 * th);
    const std::vector<float>& got = q_outputs[n];
    double dev = 0.0;
    for (std::size_t i = 0; i < got.size() && i < ref.size(); ++i)
      dev = std::max(dev, std::fabs(static_cast<double>(got[i]) - ref[i]));
    std::printf(", \"q_proj_max_dev_from_fp32\": %.3g}", ref_max > 0 ? dev / ref_max : 0.0);
  }
  const double ts = median(seconds["hessian_syrk_tf32_math"]);
  std::printf(", \"hessian_syrk_tf32_math\": {\"median_ms\": %.3f, \"tflops\": %.1f}", 1e3 * ts,
              ts > 0 ? hessian_flops(matmul_precision::fp32) / ts / 1e12 : 0.0);
  std::printf("}\n");
  return 0;
}

#endif  // SHARDQ_HAVE_CUDA
