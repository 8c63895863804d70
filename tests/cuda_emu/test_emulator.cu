// Tests of the host CUDA emulator itself (built only with -DSHARDQ_CUDA=EMU, label emu): that it
// runs kernels as CUDA defines them (barriers, shuffles, shared and dynamic shared memory, the
// builtins), that it stops on what a GPU would fault on or hang at, with its one-line message,
// and that it computes what a GPU need not round as the host does otherwise than the host.
#include <cblas.h>
#include <lapacke.h>

#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "cublas_v2.h"
#include "cuda_runtime_api.h"
#include "cusolverDn.h"

namespace {

// Block-wide tree sum in shared memory: wrong without its barriers.
__global__ void block_sum_kernel(const int* in, int* out) {
  __shared__ int part[256];
  part[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = part[0];
}

// The same without the barriers: each thread reads slots other threads have not written yet
// in one of the two orders the emulator alternates.
__global__ void racy_neighbour_kernel(const int* in, int* out) {
  __shared__ int part[256];
  part[threadIdx.x] = in[threadIdx.x];
  const unsigned right = (threadIdx.x + 1) % blockDim.x;
  out[threadIdx.x] = part[right];
}

__global__ void warp_sum_kernel(const float* in, float* out) {
  float v = in[threadIdx.x];
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  out[threadIdx.x] = v;
}

__global__ void dynamic_shared_kernel(float* out) {
  extern __shared__ float staged[];
  staged[threadIdx.x] = static_cast<float>(threadIdx.x) * 2.0f;
  __syncthreads();
  out[threadIdx.x] = staged[blockDim.x - 1 - threadIdx.x];
}

__global__ void index_kernel(unsigned* out) {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  out[b * blockDim.x * blockDim.y * blockDim.z + t] = b * 1000 + t;
}

__global__ void write_kernel(float* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n + 64) out[i] = 1.0f;  // 64 past the end
}

// Lane 0 waits at the block's barrier for lanes that wait at a shuffle for lane 0: a hang on a
// GPU. (Threads that have exited do not hold a barrier up, there as here.)
__global__ void divergent_barrier_kernel(int* out) {
  int v = 1;
  if (threadIdx.x == 0) __syncthreads();
  else v = __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

__global__ void transcendentals_kernel(const float* x, float* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  out[i] = expf(x[i]);
  out[n + i] = sinf(x[i]);
  out[2 * n + i] = cosf(x[i]);
}

// out[0] = a·b + c as nvcc compiles it (one fma), out[1] the same with each step rounded.
__global__ void contraction_kernel(const float* v, float* out) {
  out[0] = v[0] * v[1] + v[2];
  out[1] = __fadd_rn(__fmul_rn(v[0], v[1]), v[2]);
}

std::vector<float> random_floats(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

template <typename T>
T* device_alloc(std::size_t n) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
  return static_cast<T*>(p);
}

TEST(CudaEmu, BarriersMakeABlockSumCorrect) {
  const int blocks = 5, threads = 256;
  std::vector<int> in(blocks * threads);
  std::iota(in.begin(), in.end(), 1);
  int* d_in = device_alloc<int>(in.size());
  int* d_out = device_alloc<int>(blocks);
  ASSERT_EQ(cudaMemcpy(d_in, in.data(), in.size() * sizeof(int), cudaMemcpyHostToDevice), cudaSuccess);
  for (int launch = 0; launch < 2; ++launch) {  // both thread orders
    block_sum_kernel<<<blocks, threads>>>(d_in, d_out);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    std::vector<int> out(blocks);
    ASSERT_EQ(cudaMemcpy(out.data(), d_out, blocks * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    for (int b = 0; b < blocks; ++b)
      EXPECT_EQ(out[b], std::accumulate(in.begin() + b * threads, in.begin() + (b + 1) * threads, 0)) << b;
  }
  cudaFree(d_in);
  cudaFree(d_out);
}

TEST(CudaEmu, AMissingBarrierGivesWrongValuesInOneOfTheOrders) {
  const int threads = 64;
  std::vector<int> in(threads);
  std::iota(in.begin(), in.end(), 100);
  int* d_in = device_alloc<int>(threads);
  int* d_out = device_alloc<int>(threads);
  ASSERT_EQ(cudaMemcpy(d_in, in.data(), threads * sizeof(int), cudaMemcpyHostToDevice), cudaSuccess);
  int wrong = 0;
  for (int launch = 0; launch < 2; ++launch) {
    racy_neighbour_kernel<<<1, threads>>>(d_in, d_out);
    std::vector<int> out(threads);
    ASSERT_EQ(cudaMemcpy(out.data(), d_out, threads * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    for (int t = 0; t < threads; ++t) wrong += out[t] != in[(t + 1) % threads];
  }
  EXPECT_GT(wrong, 0);
  cudaFree(d_in);
  cudaFree(d_out);
}

TEST(CudaEmu, ShuffleXorSumsAWarp) {
  std::vector<float> in(64);
  std::iota(in.begin(), in.end(), 0.0f);
  float* d_in = device_alloc<float>(64);
  float* d_out = device_alloc<float>(64);
  ASSERT_EQ(cudaMemcpy(d_in, in.data(), 64 * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  warp_sum_kernel<<<1, 64>>>(d_in, d_out);
  std::vector<float> out(64);
  ASSERT_EQ(cudaMemcpy(out.data(), d_out, 64 * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  for (int t = 0; t < 64; ++t) EXPECT_EQ(out[t], t < 32 ? 496.0f : 1520.0f) << t;  // 0+..+31, 32+..+63
  cudaFree(d_in);
  cudaFree(d_out);
}

TEST(CudaEmu, DynamicSharedMemoryAndItsLimit) {
  float* d_out = device_alloc<float>(128);
  dynamic_shared_kernel<<<1, 128, 128 * sizeof(float)>>>(d_out);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<float> out(128);
  ASSERT_EQ(cudaMemcpy(out.data(), d_out, 128 * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  for (int t = 0; t < 128; ++t) EXPECT_EQ(out[t], (127 - t) * 2.0f);
  // Past 48 KiB only after cudaFuncSetAttribute raised the kernel's limit, and never past 227 KiB.
  dynamic_shared_kernel<<<1, 128, 64 * 1024>>>(d_out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  ASSERT_EQ(cudaFuncSetAttribute(dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024),
            cudaSuccess);
  dynamic_shared_kernel<<<1, 128, 64 * 1024>>>(d_out);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaFuncSetAttribute(dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024),
            cudaErrorInvalidValue);
  cudaFree(d_out);
}

TEST(CudaEmu, BuiltinsCoverEveryThreadOfA3dGrid) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const unsigned n = 12 * 24;
  unsigned* d_out = device_alloc<unsigned>(n);
  index_kernel<<<grid, block>>>(d_out);
  std::vector<unsigned> out(n);
  ASSERT_EQ(cudaMemcpy(out.data(), d_out, n * sizeof(unsigned), cudaMemcpyDeviceToHost), cudaSuccess);
  for (unsigned i = 0; i < n; ++i) EXPECT_EQ(out[i], i / 24 * 1000 + i % 24) << i;
  cudaFree(d_out);
}

TEST(CudaEmu, LaunchShapesBeyondAnH100AreRefused) {
  unsigned* d_out = device_alloc<unsigned>(1);
  index_kernel<<<1, 1025>>>(d_out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  index_kernel<<<dim3(1, 65536), 1>>>(d_out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  index_kernel<<<0, 32>>>(d_out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // read and cleared
  cudaFree(d_out);
}

TEST(CudaEmu, DeviceMemoryStartsAsNaNAndCopiesAreChecked) {
  float* d = device_alloc<float>(4);
  float h[4];
  ASSERT_EQ(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost), cudaSuccess);
  for (float v : h) EXPECT_TRUE(v != v);
  EXPECT_EQ(cudaMemcpy(h, d, 5 * sizeof(float), cudaMemcpyDeviceToHost), cudaErrorInvalidValue);   // past the end
  EXPECT_EQ(cudaMemcpy(d, h, sizeof h, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);            // wrong direction
  EXPECT_EQ(cudaMemcpy(h, h, sizeof h, cudaMemcpyHostToDevice), cudaErrorInvalidValue);            // no device side
  EXPECT_EQ(cudaMemcpy(d, h, sizeof h, cudaMemcpyDefault), cudaSuccess);
  cudaGetLastError();
  cudaFree(d);
}

// What the death tests run (outside EXPECT_DEATH: a launch's commas would split its arguments).
void write_past_an_allocation() {
  float* d = device_alloc<float>(100);
  write_kernel<<<4, 64>>>(d, 100);
}
void launch_with_a_host_pointer() {
  std::vector<float> host(256);
  write_kernel<<<1, 32>>>(host.data(), 0);
}
void launch_a_divergent_barrier() {
  int* d = device_alloc<int>(32);
  divergent_barrier_kernel<<<1, 32>>>(d);
}
void sgemm_with_a_leading_dimension_too_large() {
  cublasHandle_t h;
  cublasCreate(&h);
  float* a = device_alloc<float>(16 * 16);
  float* c = device_alloc<float>(16 * 16);
  const float one = 1.0f, zero = 0.0f;
  // lda 17 for a 16 x 16 operand reads 15 values past its allocation.
  cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 16, 16, 16, &one, a, 17, a, 16, &zero, c, 16);
}

class CudaEmuDeathTest : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(CudaEmuDeathTest, AnAccessPastAnAllocationStopsNamingKernelAndThread) {
  EXPECT_DEATH(write_past_an_allocation(),
               "cuda_emu: invalid access at .* in write_kernel block \\(.*\\) thread \\(.*\\): 112 bytes past the "
               "end of an allocation of 400 bytes");
}

TEST_F(CudaEmuDeathTest, AHostPointerArgumentStops) {
  EXPECT_DEATH(launch_with_a_host_pointer(), "cuda_emu: write_kernel: pointer argument 0 .* is not device memory");
}

TEST_F(CudaEmuDeathTest, ABarrierSomeThreadsNeverReachStops) {
  EXPECT_DEATH(launch_a_divergent_barrier(),
               "cuda_emu: divergent_barrier_kernel block \\(0,0,0\\): 1 threads wait at __syncthreads and 31 at a "
               "shuffle");
}

TEST_F(CudaEmuDeathTest, ACublasOperandOutsideItsAllocationStops) {
  EXPECT_DEATH(sgemm_with_a_leading_dimension_too_large(),
               "cuda_emu: cublasSgemm: operand A \\(16 x 16, ld 17 .*\\) is not inside one device allocation");
}

TEST(CudaEmu, CublasSgemmIsColumnMajor) {
  cublasHandle_t h;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  // A [2 x 3] = {{1, 2, 3}, {4, 5, 6}} and B [3 x 2] = {{7, 8}, {9, 10}, {11, 12}}, column-major.
  const std::vector<float> a = {1, 4, 2, 5, 3, 6}, b = {7, 9, 11, 8, 10, 12};
  float* d_a = device_alloc<float>(6);
  float* d_b = device_alloc<float>(6);
  float* d_c = device_alloc<float>(4);
  cudaMemcpy(d_a, a.data(), 6 * sizeof(float), cudaMemcpyHostToDevice);
  cudaMemcpy(d_b, b.data(), 6 * sizeof(float), cudaMemcpyHostToDevice);
  const float one = 1.0f, zero = 0.0f;
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, d_a, 2, d_b, 3, &zero, d_c, 2), CUBLAS_STATUS_SUCCESS);
  std::vector<float> c(4);
  cudaMemcpy(c.data(), d_c, 4 * sizeof(float), cudaMemcpyDeviceToHost);
  EXPECT_EQ(c, (std::vector<float>{58, 139, 64, 154}));
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, d_a, 1, d_b, 3, &zero, d_c, 2),
            CUBLAS_STATUS_INVALID_VALUE);  // lda < rows
  cublasDestroy(h);
  cudaFree(d_a);
  cudaFree(d_b);
  cudaFree(d_c);
}

template <typename T>
std::vector<T> to_host(const T* d, std::size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

template <typename T>
T* to_device(const std::vector<T>& h) {
  T* d = device_alloc<T>(h.size());
  EXPECT_EQ(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

TEST(CudaEmu, DeviceTranscendentalsAreOneUlpFromTheHostsForHalfTheArguments) {
  if (!::shardq_emu::device_numerics()) GTEST_SKIP() << "SHARDQ_EMU_NUMERICS=host";
  std::vector<float> x = random_floats(4096, 7);
  x[0] = 0.0f;
  x[1] = -INFINITY;
  const int n = static_cast<int>(x.size());
  float* d_x = to_device(x);
  float* d_out = device_alloc<float>(3 * x.size());
  transcendentals_kernel<<<n / 256, 256>>>(d_x, d_out, n);
  const std::vector<float> out = to_host(d_out, 3 * x.size());
  int moved[3] = {0, 0, 0};
  for (int i = 0; i < n; ++i) {
    const float host[3] = {std::exp(x[i]), std::sin(x[i]), std::cos(x[i])};
    for (int f = 0; f < 3; ++f) {
      const float dev = out[f * n + i];
      if (dev == host[f] || (std::isnan(dev) && std::isnan(host[f]))) continue;  // sin, cos of -inf
      ++moved[f];
      EXPECT_TRUE(dev == std::nextafter(host[f], INFINITY) || dev == std::nextafter(host[f], -INFINITY))
          << "function " << f << " at " << x[i] << ": " << dev << " vs the host's " << host[f];
    }
  }
  for (int f = 0; f < 3; ++f) {
    EXPECT_GT(moved[f], n * 3 / 10) << "function " << f;
    EXPECT_LT(moved[f], n * 7 / 10) << "function " << f;
  }
  EXPECT_EQ(out[0], 1.0f);      // exp(0)
  EXPECT_EQ(out[n], 0.0f);      // sin(0)
  EXPECT_EQ(out[2 * n], 1.0f);  // cos(0)
  EXPECT_EQ(out[1], 0.0f);      // exp(-inf)
  cudaFree(d_x);
  cudaFree(d_out);
}

TEST(CudaEmu, KernelsContractIntoFmaAsNvccDoesButNotInsideRoundingIntrinsics) {
  // a² = 1 + 2^-11 + 2^-24 exactly; rounded to fp32 the 2^-24 is a tie that goes to even.
  const std::vector<float> v = {1.0f + 0x1p-12f, 1.0f + 0x1p-12f, -(1.0f + 0x1p-11f)};
  float* d_v = to_device(v);
  float* d_out = device_alloc<float>(2);
  contraction_kernel<<<1, 1>>>(d_v, d_out);
  const std::vector<float> out = to_host(d_out, 2);
#if SHARDQ_CUDA_EMU_HOST_FMA
  EXPECT_EQ(out[0], 0x1p-24f);
#else
  EXPECT_EQ(out[0], 0.0f);
#endif
  EXPECT_EQ(out[1], 0.0f);
  cudaFree(d_v);
  cudaFree(d_out);
}

TEST(CudaEmu, CublasSumsInAnotherOrderThanOpenBlasButAsAccurately) {
  if (!::shardq_emu::device_numerics()) GTEST_SKIP() << "SHARDQ_EMU_NUMERICS=host";
  const int m = 64, n = 96, k = 200;
  const std::vector<float> a = random_floats(static_cast<std::size_t>(m) * k, 11);
  const std::vector<float> b = random_floats(static_cast<std::size_t>(k) * n, 12);
  float* d_a = to_device(a);
  float* d_b = to_device(b);
  float* d_c = device_alloc<float>(static_cast<std::size_t>(m) * n);
  cublasHandle_t h;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  const float one = 1.0f, zero = 0.0f;
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, d_a, m, d_b, k, &zero, d_c, m),
            CUBLAS_STATUS_SUCCESS);
  const std::vector<float> c = to_host(d_c, static_cast<std::size_t>(m) * n);
  std::vector<float> ref(c.size());
  cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a.data(), m, b.data(), k, 0.0f, ref.data(), m);
  std::size_t equal = 0;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double abs_sum = 0.0, exact = 0.0;
      for (int p = 0; p < k; ++p) {
        const double t = static_cast<double>(a[p * m + i]) * b[j * k + p];
        exact += t;
        abs_sum += std::fabs(t);
      }
      const std::size_t idx = static_cast<std::size_t>(j) * m + i;
      equal += c[idx] == ref[idx];
      EXPECT_LE(std::fabs(c[idx] - exact), 1e-6 * abs_sum) << "C(" << i << ", " << j << ")";
    }
  EXPECT_LT(equal, c.size() * 9 / 10) << "the emulated product rounds as OpenBLAS's everywhere";
  cublasDestroy(h);
  cudaFree(d_a);
  cudaFree(d_b);
  cudaFree(d_c);
}

TEST(CudaEmu, CusolverFactorsAsLapackUpToRounding) {
  if (!::shardq_emu::device_numerics()) GTEST_SKIP() << "SHARDQ_EMU_NUMERICS=host";
  // A = XᵀX / rows + I, well conditioned, n = 40.
  const int n = 40, rows = 80;
  const std::vector<float> x = random_floats(static_cast<std::size_t>(rows) * n, 13);
  std::vector<float> a(static_cast<std::size_t>(n) * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      double s = i == j ? 1.0 : 0.0;
      for (int r = 0; r < rows; ++r) s += static_cast<double>(x[r * n + i]) * x[r * n + j] / rows;
      a[j * n + i] = static_cast<float>(s);
    }
  float* d_a = to_device(a);
  int* d_info = device_alloc<int>(1);
  cusolverDnHandle_t h;
  cusolverDnParams_t params;
  ASSERT_EQ(cusolverDnCreate(&h), CUSOLVER_STATUS_SUCCESS);
  ASSERT_EQ(cusolverDnCreateParams(&params), CUSOLVER_STATUS_SUCCESS);
  std::size_t device_bytes = 0, host_bytes = 0;
  ASSERT_EQ(cusolverDnXpotrf_bufferSize(h, params, CUBLAS_FILL_MODE_UPPER, n, CUDA_R_32F, d_a, n, CUDA_R_32F,
                                        &device_bytes, &host_bytes),
            CUSOLVER_STATUS_SUCCESS);
  void* d_work = device_alloc<char>(device_bytes);
  ASSERT_EQ(cusolverDnXpotrf(h, params, CUBLAS_FILL_MODE_UPPER, n, CUDA_R_32F, d_a, n, CUDA_R_32F, d_work, device_bytes,
                             nullptr, 0, d_info),
            CUSOLVER_STATUS_SUCCESS);
  EXPECT_EQ(to_host(d_info, 1)[0], 0);
  const std::vector<float> u = to_host(d_a, a.size());
  std::vector<float> ref = a;
  ASSERT_EQ(LAPACKE_spotrf(LAPACK_COL_MAJOR, 'U', n, ref.data(), n), 0);
  std::size_t equal = 0, upper = 0;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i <= j; ++i) {
      const std::size_t idx = static_cast<std::size_t>(j) * n + i;
      ++upper;
      equal += u[idx] == ref[idx];
      EXPECT_NEAR(u[idx], ref[idx], 1e-5f) << "U(" << i << ", " << j << ")";
    }
  EXPECT_LT(equal, upper) << "the emulated factor rounds as LAPACK's everywhere";
  cusolverDnDestroyParams(params);
  cusolverDnDestroy(h);
  cudaFree(d_a);
  cudaFree(d_info);
  cudaFree(d_work);
}

}  // namespace
