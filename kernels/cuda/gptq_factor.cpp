// GPTQ factor on the GPU, host driver: the scan, the CPU tier's ordering and damping schedule,
// and per attempt build → cusolverDnXpotrf → cusolverDnXtrtri → finish; see
// kernels/cuda/gptq_factor.hpp (contract) and kernels/cuda/gptq_factor.cu (index algebra).
#include "kernels/cuda/gptq_factor.hpp"

#include <algorithm>
#include <cstddef>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "common/error.hpp"
#include "common/tensor.hpp"
#include "kernels/quantize.hpp"

namespace shardq::cuda {
namespace {

struct CusolverParamsDeleter {
  void operator()(cusolverDnParams_t p) const noexcept { cusolverDnDestroyParams(p); }
};
using unique_cusolver_params = std::unique_ptr<std::remove_pointer_t<cusolverDnParams_t>, CusolverParamsDeleter>;

unique_cusolver_params make_cusolver_params() {
  cusolverDnParams_t p = nullptr;
  SHARDQ_CUDA_CHECK(cusolverDnCreateParams(&p));
  return unique_cusolver_params(p);
}

constexpr unsigned long long no_index = std::numeric_limits<unsigned long long>::max();

// Reads a device status word written on `stream` (synchronizes the stream).
template <typename T>
T read_status(const DeviceBuffer<T>& d, cudaStream_t stream) {
  T v{};
  copy_async(&v, d.get(), 1, stream);
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream));
  return v;
}

void reset_index(DeviceBuffer<unsigned long long>& d, cudaStream_t stream) {
  SHARDQ_CUDA_CHECK(cudaMemsetAsync(d.get(), 0xff, sizeof(unsigned long long), stream));  // = no_index
}

}  // namespace

GptqFactorCuda gptq_prepare_cuda(const float* d_h, int64_t cols, const QuantConfig& cfg, cudaStream_t stream) {
  quant_config_check(cfg);
  const int64_t n = cols;
  const std::string shape = shape_string({n, n});
  if (n < 1) throw error(fmt::format("gptq (cuda): Hessian must be square with at least one column, got {}", shape));
  const auto nn = static_cast<std::size_t>(n * n);

  DeviceBuffer<float> d_diag(static_cast<std::size_t>(n));
  DeviceBuffer<unsigned long long> d_bad(1);
  reset_index(d_bad, stream);
  gptq_hessian_scan(d_h, n, d_diag.get(), d_bad.get(), stream);
  std::vector<float> diag(static_cast<std::size_t>(n));
  copy_async(diag.data(), d_diag.get(), diag.size(), stream);
  const unsigned long long bad = read_status(d_bad, stream);
  if (bad != no_index) {
    const auto at = static_cast<int64_t>(bad);
    throw error(fmt::format("gptq (cuda): Hessian {} has a non-finite value at ({}, {})", shape, at / n, at % n));
  }

  cpu::GptqOrder order = cpu::gptq_order(std::move(diag), cfg.act_order);
  GptqFactorCuda f;
  f.cols = n;
  f.d_perm = DeviceBuffer<int32_t>(static_cast<std::size_t>(n));
  f.d_dead = DeviceBuffer<uint8_t>(static_cast<std::size_t>(n));
  copy_async(f.d_perm.get(), order.perm.data(), order.perm.size(), stream);
  copy_async(f.d_dead.get(), order.dead.data(), order.dead.size(), stream);
  f.d_u = DeviceBuffer<float>(nn);

  unique_cusolver solver = make_cusolver(stream);
  unique_cusolver_params params = make_cusolver_params();
  std::size_t potrf_dev = 0, potrf_host = 0, trtri_dev = 0, trtri_host = 0;
  SHARDQ_CUDA_CHECK(cusolverDnXpotrf_bufferSize(solver.get(), params.get(), CUBLAS_FILL_MODE_UPPER, n, CUDA_R_32F,
                                                f.d_u.get(), n, CUDA_R_32F, &potrf_dev, &potrf_host));
  SHARDQ_CUDA_CHECK(cusolverDnXtrtri_bufferSize(solver.get(), CUBLAS_FILL_MODE_UPPER, CUBLAS_DIAG_NON_UNIT, n,
                                                CUDA_R_32F, f.d_u.get(), n, &trtri_dev, &trtri_host));
  DeviceBuffer<unsigned char> d_work(std::max(potrf_dev, trtri_dev));
  std::vector<unsigned char> host_work(std::max(potrf_host, trtri_host));
  void* host_ptr = host_work.empty() ? nullptr : host_work.data();
  DeviceBuffer<int> d_info(1);

  auto solver_info = [&](const char* call) {
    const int info = read_status(d_info, stream);
    if (info < 0)  // an argument cuSOLVER rejected: a bug here, not a property of H
      throw cuda_error(fmt::format("gptq (cuda): {} rejected argument {} for Hessian {}", call, -info, shape));
    return info;
  };
  // One factorisation attempt at diagonal shift `add`; 0 or the failing (1-based) index.
  auto attempt = [&](float add) -> int {
    gptq_factor_build(d_h, n, f.d_perm.get(), f.d_dead.get(), add, f.d_u.get(), stream);
    SHARDQ_CUDA_CHECK(cusolverDnXpotrf(solver.get(), params.get(), CUBLAS_FILL_MODE_UPPER, n, CUDA_R_32F,
                                       f.d_u.get(), n, CUDA_R_32F, d_work.get(), potrf_dev, host_ptr, potrf_host,
                                       d_info.get()));
    if (const int info = solver_info("cusolverDnXpotrf"); info != 0) return info;
    SHARDQ_CUDA_CHECK(cusolverDnXtrtri(solver.get(), CUBLAS_FILL_MODE_UPPER, CUBLAS_DIAG_NON_UNIT, n, CUDA_R_32F,
                                       f.d_u.get(), n, d_work.get(), trtri_dev, host_ptr, trtri_host,
                                       d_info.get()));
    if (const int info = solver_info("cusolverDnXtrtri"); info != 0) return info;
    reset_index(d_bad, stream);
    gptq_factor_finish(f.d_u.get(), n, d_bad.get(), stream);
    const unsigned long long first = read_status(d_bad, stream);
    return first == no_index ? 0 : static_cast<int>(first + 1);
  };
  f.damp = cpu::gptq_damped_factor(cfg.damp, order.diag_mean, attempt, "gptq (cuda): Hessian " + shape, "cuSOLVER");
  f.perm = std::move(order.perm);
  f.dead = std::move(order.dead);
  return f;
}

GptqFactorCuda gptq_factor_upload(const cpu::GptqFactor& factor, cudaStream_t stream) {
  const int64_t n = factor.cols;
  if (n < 1 || static_cast<int64_t>(factor.perm.size()) != n || static_cast<int64_t>(factor.dead.size()) != n ||
      static_cast<int64_t>(factor.hinv_chol.size()) != n * n)
    throw error(fmt::format("gptq (cuda): factor of {} columns has perm {}, dead {}, U {} entries", n,
                            factor.perm.size(), factor.dead.size(), factor.hinv_chol.size()));
  GptqFactorCuda f;
  f.cols = n;
  f.perm = factor.perm;
  f.dead = factor.dead;
  f.damp = factor.damp;
  f.d_perm = DeviceBuffer<int32_t>(f.perm.size());
  f.d_dead = DeviceBuffer<uint8_t>(f.dead.size());
  f.d_u = DeviceBuffer<float>(factor.hinv_chol.size());
  copy_async(f.d_perm.get(), f.perm.data(), f.perm.size(), stream);
  copy_async(f.d_dead.get(), f.dead.data(), f.dead.size(), stream);
  copy_async(f.d_u.get(), factor.hinv_chol.data(), factor.hinv_chol.size(), stream);
  SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream));
  return f;
}

QuantizedLinear GptqFactorCuda::make_output(int64_t rows, const QuantConfig& cfg) const {
  return cpu::gptq_make_output(rows, perm, cfg);
}

cpu::GptqFactor GptqFactorCuda::to_host() const {
  cpu::GptqFactor f;
  f.cols = cols;
  f.perm = perm;
  f.dead = dead;
  f.damp = damp;
  f.hinv_chol = d_u.to_host();
  return f;
}

}  // namespace shardq::cuda
