// Random inputs of the benchmarks (bench_*.cpp): N(0, stddev²) values from one mt19937 stream
// per seed, so every benchmark that names a seed gets the same numbers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "common/tensor.hpp"

namespace shardq::bench {

inline std::vector<float> random_normal(std::size_t n, uint32_t seed, float stddev) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = nd(gen);
  return v;
}

inline Tensor random_tensor(int64_t rows, int64_t cols, float stddev, uint32_t seed) {
  return Tensor({rows, cols}, random_normal(static_cast<std::size_t>(rows * cols), seed, stddev));
}

}  // namespace shardq::bench
