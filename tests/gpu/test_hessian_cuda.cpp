// GPU Hessian accumulator (kernels/cuda/hessian.hpp) against the CPU tier
// cpu::HessianAccumulator: bit-identical fixed-point sums where every fp32 partial is exact
// (small-integer activations), fp32-rounding agreement on random data and on the real
// stories260K embeddings, merging of GPU and CPU accumulators, and the error on non-finite input.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/error.hpp"
#include "kernels/cpu/hessian.hpp"
#include "kernels/cuda/hessian.hpp"
#include "tests/gpu/gpu_check.hpp"

namespace shardq {
namespace {

using test::check_tensor;

std::vector<float> small_integers(std::size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> dist(-8, 8);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(dist(rng));
  return v;
}

class HessianCudaShapes : public ::testing::TestWithParam<int64_t> {};

TEST_P(HessianCudaShapes, ExactIntegersBitIdenticalToCpu) {
  SHARDQ_REQUIRE_GPU();
  const int64_t dim = GetParam();
  cpu::HessianAccumulator cpu_acc(dim);
  cuda::HessianAccumulatorCuda gpu_acc(dim);
  for (int64_t batch : {1, 33, 128}) {
    const std::vector<float> x = small_integers(static_cast<std::size_t>(batch * dim), static_cast<uint32_t>(dim + batch));
    cpu_acc.add(x.data(), batch);
    gpu_acc.add_host(x.data(), batch);
  }
  const cpu::HessianAccumulator got = gpu_acc.download();
  ASSERT_EQ(got.n_tokens(), cpu_acc.n_tokens());
  const auto a = got.packed_sums(), b = cpu_acc.packed_sums();
  ASSERT_EQ(a.size(), b.size());
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < a.size(); ++i) mismatches += a[i] != b[i];
  EXPECT_EQ(mismatches, 0u) << "of " << a.size() << " packed sums";
}

TEST_P(HessianCudaShapes, RandomMatchesCpuToFp32Rounding) {
  SHARDQ_REQUIRE_GPU();
  const int64_t dim = GetParam(), n = 257;
  const std::vector<float> x = test::random_vector(static_cast<std::size_t>(n * dim), 7u + static_cast<uint32_t>(dim));
  cpu::HessianAccumulator cpu_acc(dim);
  cpu_acc.add(x.data(), n);
  cuda::HessianAccumulatorCuda gpu_acc(dim);
  cuda::DeviceBuffer<float> d_x = cuda::to_device(x);
  gpu_acc.add(d_x.get(), n);
  const Tensor h_gpu = gpu_acc.download().finalize(), h_cpu = cpu_acc.finalize();
  // Each entry is a sum of n products of magnitude ≤ 1: fp32 reordering error ≲ n·2^-24·|terms|.
  EXPECT_TRUE(check_tensor("hessian dim " + std::to_string(dim), h_gpu.ptr(), h_cpu.ptr(), h_cpu.data.size(), 2e-5f, 1e-5f));
}

// The device finalize (int128 → double → fp32 on the GPU) equals the CPU's finalize of the
// same sums bit for bit, on large sums (random data: every 2^-64 bit is populated).
TEST_P(HessianCudaShapes, DeviceFinalizeBitIdenticalToCpu) {
  SHARDQ_REQUIRE_GPU();
  const int64_t dim = GetParam(), n = 300;
  const std::vector<float> x = test::random_vector(static_cast<std::size_t>(n * dim), 11u + static_cast<uint32_t>(dim), -30.0f, 30.0f);
  cuda::HessianAccumulatorCuda gpu_acc(dim);
  gpu_acc.add_host(x.data(), n);
  cuda::DeviceBuffer<float> d_h(static_cast<std::size_t>(dim * dim));
  gpu_acc.finalize(d_h.get());
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(gpu_acc.stream()));
  const std::vector<float> got = d_h.to_host();
  const Tensor want = gpu_acc.download().finalize();
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < got.size(); ++i) mismatches += std::memcmp(&got[i], &want.data[i], sizeof(float)) != 0;
  EXPECT_EQ(mismatches, 0u) << "of " << got.size() << " entries";
}

// TF32 partials (tensor-core sgemm, 10-bit mantissa inputs) stay within TF32 rounding of the
// fp32 result: per product ~2^-11 relative, summed with random signs over n = 257 tokens of
// |x| ≤ 1 and scaled by 2/n, about 2e-5 absolute; 2e-4 leaves a 10x margin.
TEST_P(HessianCudaShapes, Tf32CloseToFp32) {
  SHARDQ_REQUIRE_GPU();
  const int64_t dim = GetParam(), n = 257;
  const std::vector<float> x = test::random_vector(static_cast<std::size_t>(n * dim), 13u + static_cast<uint32_t>(dim));
  cuda::HessianAccumulatorCuda fp32(dim), tf32(dim, nullptr, cuda::matmul_precision::tf32);
  fp32.add_host(x.data(), n);
  tf32.add_host(x.data(), n);
  const Tensor a = tf32.download().finalize(), b = fp32.download().finalize();
  EXPECT_TRUE(check_tensor("hessian tf32 dim " + std::to_string(dim), a.ptr(), b.ptr(), b.data.size(), 2e-4f, 2e-3f));
}

// reset() empties the sums; upload() replaces them (the host reduction across ranks).
TEST_P(HessianCudaShapes, ResetAndUploadRoundTrip) {
  SHARDQ_REQUIRE_GPU();
  const int64_t dim = GetParam();
  const std::vector<float> a = small_integers(static_cast<std::size_t>(20 * dim), 3), b = small_integers(static_cast<std::size_t>(9 * dim), 4);
  cuda::HessianAccumulatorCuda gpu_acc(dim);
  gpu_acc.add_host(a.data(), 20);
  gpu_acc.reset();
  EXPECT_EQ(gpu_acc.n_tokens(), 0);
  gpu_acc.add_host(b.data(), 9);
  cpu::HessianAccumulator cpu_b(dim);
  cpu_b.add(b.data(), 9);
  const cpu::HessianAccumulator after_reset = gpu_acc.download();
  EXPECT_TRUE(std::equal(after_reset.packed_sums().begin(), after_reset.packed_sums().end(), cpu_b.packed_sums().begin()));
  cpu::HessianAccumulator total(dim);
  total.add(a.data(), 20);
  total.merge(cpu_b);
  gpu_acc.upload(total);
  const cpu::HessianAccumulator back = gpu_acc.download();
  EXPECT_EQ(back.n_tokens(), 29);
  EXPECT_TRUE(std::equal(back.packed_sums().begin(), back.packed_sums().end(), total.packed_sums().begin()));
}

INSTANTIATE_TEST_SUITE_P(Dims, HessianCudaShapes, ::testing::Values(1, 7, 17, 64, 65, 127, 172));

// Small integers are exact in TF32 and bf16, and their products' sums stay below 2^24, so
// every precision's partials are exact and the fixed-point sums equal the CPU's bit for bit.
// Dims above 1024 cover the lower-triangle gemm blocks of the tensor-core paths (two and
// three blocks, the last one partial).
TEST(HessianCuda, ExactIntegersBitIdenticalToCpuInEveryPrecision) {
  SHARDQ_REQUIRE_GPU();
  for (const auto precision : {cuda::matmul_precision::fp32, cuda::matmul_precision::tf32x3,
                               cuda::matmul_precision::tf32, cuda::matmul_precision::bf16}) {
    for (int64_t dim : {172, 1100, 2500}) {
      const std::string tag = std::string(cuda::to_string(precision)) + " dim " + std::to_string(dim);
      cpu::HessianAccumulator cpu_acc(dim);
      cuda::HessianAccumulatorCuda gpu_acc(dim, nullptr, precision);
      for (int64_t batch : {1, 33, 128}) {
        const std::vector<float> x = small_integers(static_cast<std::size_t>(batch * dim), static_cast<uint32_t>(dim + batch));
        cpu_acc.add(x.data(), batch);
        gpu_acc.add_host(x.data(), batch);
      }
      const cpu::HessianAccumulator got = gpu_acc.download();
      const auto a = got.packed_sums(), b = cpu_acc.packed_sums();
      ASSERT_EQ(a.size(), b.size()) << tag;
      std::size_t mismatches = 0, first = a.size();
      for (std::size_t i = 0; i < a.size(); ++i)
        if (a[i] != b[i] && mismatches++ == 0) first = i;
      EXPECT_EQ(mismatches, 0u) << tag << ": of " << a.size() << " packed sums, the first at " << first;
    }
  }
}

TEST(HessianCuda, MergesWithCpuAccumulator) {
  SHARDQ_REQUIRE_GPU();
  const int64_t dim = 65;
  const std::vector<float> a = small_integers(40 * dim, 1), b = small_integers(24 * dim, 2);
  cuda::HessianAccumulatorCuda gpu_acc(dim);
  gpu_acc.add_host(a.data(), 40);
  cpu::HessianAccumulator merged = gpu_acc.download();
  cpu::HessianAccumulator part(dim);
  part.add(b.data(), 24);
  merged.merge(part);
  cpu::HessianAccumulator all(dim);
  all.add(a.data(), 40);
  all.add(b.data(), 24);
  EXPECT_EQ(merged.n_tokens(), 64);
  const auto x = merged.packed_sums(), y = all.packed_sums();
  EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end()));
}

TEST(HessianCuda, Stories260KEmbeddings) {
  SHARDQ_REQUIRE_GPU();
  const test::Stories260K m = test::load_stories260k();
  cpu::HessianAccumulator cpu_acc(m.dim);
  cuda::HessianAccumulatorCuda gpu_acc(m.dim);
  for (int64_t t0 = 0; t0 < m.vocab; t0 += 128) {  // four micro-batches of real activations
    cpu_acc.add(m.token_embedding.data() + t0 * m.dim, 128);
    gpu_acc.add_host(m.token_embedding.data() + t0 * m.dim, 128);
  }
  const Tensor h_gpu = gpu_acc.download().finalize(), h_cpu = cpu_acc.finalize();
  float max_abs = 0.0f;
  for (float v : h_cpu.data) max_abs = std::max(max_abs, std::fabs(v));
  EXPECT_TRUE(check_tensor("hessian stories260K token_embedding", h_gpu.ptr(), h_cpu.ptr(), h_cpu.data.size(),
                           1e-5f * max_abs, 1e-5f));
}

TEST(HessianCuda, NonFiniteInputThrows) {
  SHARDQ_REQUIRE_GPU();
  std::vector<float> x(3 * 4, 1.0f);
  x[5] = std::numeric_limits<float>::infinity();
  cuda::HessianAccumulatorCuda gpu_acc(4);
  EXPECT_THROW(gpu_acc.add_host(x.data(), 3), error);
}

}  // namespace
}  // namespace shardq
