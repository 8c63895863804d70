// Timing of the GPU benchmarks (bench_gpu_*.cpp): every timed iteration kept per case name,
// device time from CUDA events around the launches, and the median and minimum the JSON
// lines report. Their inputs: bench/bench_inputs.hpp.
#pragma once

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.hpp"

namespace shardq::bench {

inline std::map<std::string, std::vector<double>> seconds;  // every timed iteration of each case

// Device time of one launch sequence on `stream`, recorded under `name`.
template <typename F>
double device_seconds(const std::string& name, cudaStream_t stream, F&& launch) {
  cuda::unique_event start = cuda::make_event(), stop = cuda::make_event();
  SHARDQ_CUDA_CHECK(cudaEventRecord(start.get(), stream));
  launch();
  SHARDQ_CUDA_CHECK(cudaEventRecord(stop.get(), stream));
  SHARDQ_CUDA_CHECK(cudaEventSynchronize(stop.get()));
  float ms = 0.0f;
  SHARDQ_CUDA_CHECK(cudaEventElapsedTime(&ms, start.get(), stop.get()));
  seconds[name].push_back(ms * 1e-3);
  return ms * 1e-3;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}
inline double minimum(const std::vector<double>& v) { return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end()); }

}  // namespace shardq::bench
