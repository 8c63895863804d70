// The matmul precisions of the CUDA tier (kernels/cuda/matmul.hpp): the device split against
// the host one bit for bit, each precision's product error against a double reference (the
// ordering fp32 ≈ tf32x3 ≪ tf32 < bf16 is what a job's choice rests on), beta accumulation,
// the weight-split cache of the layer forward following changes, and the Hessians in each
// precision.
#include <bit>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "kernels/cpu/hessian.hpp"
#include "kernels/cuda/forward.hpp"
#include "kernels/cuda/hessian.hpp"
#include "kernels/cuda/matmul.hpp"
#include "kernels/cuda/tf32_split.hpp"
#include "tests/gpu/gpu_check.hpp"
#include "worker/sequential_engine.hpp"

namespace shardq {
namespace {

using cuda::DeviceBuffer;
using cuda::matmul_precision;
using cuda::to_device;
using test::random_vector;

// Needs no device: the job plan's list (worker/sequential_engine.hpp) and the tier's parser agree.
TEST(MatmulCuda, PrecisionNamesAgreeWithTheJobPlan) {
  for (const std::string_view name : cuda_matmul_precisions) {
    const matmul_precision p = cuda::matmul_precision_from_string(std::string(name), "test");
    EXPECT_EQ(cuda::to_string(p), name);
  }
  try {
    cuda::matmul_precision_from_string("fp16", "SHARDQ_CUDA_MATMUL forward");
    FAIL() << "fp16 accepted";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("SHARDQ_CUDA_MATMUL forward: unknown matmul precision 'fp16'"),
              std::string::npos)
        << e.what();
  }
}

TEST(MatmulCuda, SplitKernelMatchesHost) {
  SHARDQ_REQUIRE_GPU();
  std::mt19937 rng(3);
  std::vector<float> x;
  for (int i = 0; i < 1 << 20; ++i) x.push_back(std::bit_cast<float>(static_cast<uint32_t>(rng())));
  for (const float v : {0.0f, -0.0f, 1.0f + 0x1p-11f, 3.4028235e38f, INFINITY, -INFINITY, NAN}) x.push_back(v);
  const DeviceBuffer<float> d_x = to_device(x);
  DeviceBuffer<float> d_big(x.size()), d_small(x.size());
  cuda::tf32_split(d_x.get(), static_cast<int64_t>(x.size()), d_big.get(), d_small.get(), nullptr);
  const std::vector<float> big = d_big.to_host(), small = d_small.to_host();
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const cuda::Tf32Pair want = cuda::tf32_split(x[i]);
    mismatches += std::bit_cast<uint32_t>(big[i]) != std::bit_cast<uint32_t>(want.big) ||
                  std::bit_cast<uint32_t>(small[i]) != std::bit_cast<uint32_t>(want.small);
  }
  EXPECT_EQ(mismatches, 0u) << "of " << x.size();
}

// Row-major y [n, out] = x [n, in] · Wᵀ + beta · y0 (the layer's linears) in `precision`; its
// largest |y − ref| / (|beta·y0| + Σ_i |x_i|·|w_i|): the error relative to the product's own scale.
double linear_error(matmul_precision precision, int64_t n, int64_t out, int64_t in, float beta) {
  const std::vector<float> x = random_vector(static_cast<std::size_t>(n * in), 31),
                           w = random_vector(static_cast<std::size_t>(out * in), 32),
                           y0 = random_vector(static_cast<std::size_t>(n * out), 33);
  const DeviceBuffer<float> d_x = to_device(x), d_w = to_device(w);
  DeviceBuffer<float> d_y = to_device(y0);
  cuda::unique_stream stream = cuda::make_stream();
  cuda::Matmul mm(stream.get(), precision);
  mm.gemm(CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, 1.0f, {d_w.get()}, in, {d_x.get()}, in, beta, d_y.get(), out);
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  const std::vector<float> y = d_y.to_host();
  double worst = 0.0;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t o = 0; o < out; ++o) {
      double ref = beta * static_cast<double>(y0[t * out + o]), scale = std::fabs(ref);
      for (int64_t i = 0; i < in; ++i) {
        const double p = static_cast<double>(x[t * in + i]) * w[o * in + i];
        ref += p;
        scale += std::fabs(p);
      }
      worst = std::max(worst, std::fabs(y[t * out + o] - ref) / scale);
    }
  return worst;
}

// Bounds per precision on that error (each input rounded once: at most 2·2^-10 for TF32 and
// 2·2^-7 for bf16 even if the conversion truncates; fp32 and 3xTF32 are bounded by their fp32
// accumulation, far below 1e-5 at k ≤ 1024), and the ordering that makes 3xTF32 worth its
// three products.
TEST(MatmulCuda, ProductErrorPerPrecision) {
  SHARDQ_REQUIRE_GPU();
  struct Shape {
    int64_t n, out, in;
    float beta;
  };
  for (const Shape s : {Shape{256, 512, 1024, 0.0f}, Shape{256, 512, 1024, 1.0f}, Shape{77, 193, 301, 1.0f}}) {
    const std::string shape = std::to_string(s.n) + "x" + std::to_string(s.out) + "x" + std::to_string(s.in) +
                              " beta " + std::to_string(static_cast<int>(s.beta));
    const double fp32 = linear_error(matmul_precision::fp32, s.n, s.out, s.in, s.beta);
    const double tf32x3 = linear_error(matmul_precision::tf32x3, s.n, s.out, s.in, s.beta);
    const double tf32 = linear_error(matmul_precision::tf32, s.n, s.out, s.in, s.beta);
    const double bf16 = linear_error(matmul_precision::bf16, s.n, s.out, s.in, s.beta);
    std::printf("%s: max |err|/sum|ab|  fp32 %.3g  tf32x3 %.3g  tf32 %.3g  bf16 %.3g\n", shape.c_str(), fp32, tf32x3,
                tf32, bf16);
    EXPECT_LE(fp32, 1e-5) << shape;
    EXPECT_LE(tf32x3, 1e-5) << shape;
    EXPECT_LE(tf32, 2e-3) << shape;
    EXPECT_LE(bf16, 1.6e-2) << shape;
    if (s.in % 16 == 0) {  // tensor-core shapes: TF32 really rounds the inputs there
      EXPECT_GE(tf32, 10.0 * tf32x3) << shape;
      EXPECT_GE(bf16, 2.0 * tf32) << shape;
    }
  }
}

// The split of a resident weight follows its changes: after a linear is rewritten through
// linear() the layer computes what a layer loaded with the new weights computes, bit for bit.
TEST(MatmulCuda, LayerWeightSplitFollowsChanges) {
  SHARDQ_REQUIRE_GPU();
  ModelConfig c;
  const test::Stories260K m = test::load_stories260k();
  LayerWeights w = test::stories_layer(m, 1, c);
  const int n_seq = 2, seq_len = 48;
  const int64_t n = static_cast<int64_t>(n_seq) * seq_len;
  const std::vector<float> x = random_vector(static_cast<std::size_t>(n * c.hidden_size), 41);
  cuda::unique_stream stream = cuda::make_stream();
  const auto run = [&](cuda::LayerForwardCuda& layer) {
    DeviceBuffer<float> d = to_device(x);
    layer.forward(d.get(), n_seq, seq_len);
    SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
    return d.to_host();
  };
  cuda::LayerForwardCuda layer(c, stream.get(), matmul_precision::tf32x3);
  layer.load(w);
  const std::vector<float> before = run(layer);
  for (float& v : w.down_proj.data) v *= 0.5f;
  cuda::copy_async(layer.linear("down_proj"), w.down_proj.data.data(), w.down_proj.data.size(), stream.get());
  const std::vector<float> after = run(layer);
  cuda::LayerForwardCuda fresh(c, stream.get(), matmul_precision::tf32x3);
  fresh.load(w);
  const std::vector<float> want = run(fresh);
  EXPECT_NE(before, after);
  EXPECT_EQ(after, want);
}

// Hessian partials in the tensor-core precisions (gemms of the lower triangle by column
// blocks of hessian_gemm_block; 2500 takes three) against the fp32 syrk ones: 3xTF32 at fp32
// rounding, TF32 and bf16 within their input rounding (|x| ≤ 1, two micro-batches of 257 tokens).
TEST(MatmulCuda, HessianPrecisionsCloseToFp32) {
  SHARDQ_REQUIRE_GPU();
  struct Case {
    matmul_precision precision;
    float atol, rtol;
  };
  for (const Case c : {Case{matmul_precision::tf32x3, 2e-6f, 2e-5f}, Case{matmul_precision::tf32, 2e-4f, 2e-3f},
                       Case{matmul_precision::bf16, 4e-3f, 2e-2f}}) {
    for (const int64_t dim : {64, 172, 512, 2500}) {
      const int64_t n = 257;
      const std::vector<float> x = random_vector(static_cast<std::size_t>(n * dim), 51 + static_cast<uint32_t>(dim)),
                               x2 = random_vector(static_cast<std::size_t>(n * dim), 52 + static_cast<uint32_t>(dim));
      cuda::HessianAccumulatorCuda fp32(dim), other(dim, nullptr, c.precision);
      // Two micro-batches through the same staging buffer: the second must be split anew.
      for (const std::vector<float>* batch : {&x, &x2}) {
        fp32.add_host(batch->data(), n);
        other.add_host(batch->data(), n);
      }
      const Tensor a = other.download().finalize(), b = fp32.download().finalize();
      EXPECT_TRUE(test::check_tensor(std::string("hessian ") + cuda::to_string(c.precision) + " dim " +
                                         std::to_string(dim),
                                     a.ptr(), b.ptr(), b.data.size(), c.atol, c.rtol));
    }
  }
}

}  // namespace
}  // namespace shardq
