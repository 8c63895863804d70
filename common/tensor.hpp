// A dense, row-major fp32 tensor that owns its data: the unit weights and activations
// travel in between readers, kernels and writers.
//
// Shape letters used across shardq: a linear weight W is [rows = out_features,
// cols = in_features] (HF layout, y = W x); activations are [n_tokens, hidden].
#pragma once

#include <cstdint>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

namespace shardq {

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> s) : shape(std::move(s)), data(numel_of(shape), 0.0f) {}
  Tensor(std::vector<int64_t> s, std::vector<float> d) : shape(std::move(s)), data(std::move(d)) {}

  static int64_t numel_of(const std::vector<int64_t>& s) {
    return std::accumulate(s.begin(), s.end(), int64_t{1}, std::multiplies<>());
  }
  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  int64_t cols() const { return shape.size() < 2 ? 1 : shape[1]; }
  float* ptr() { return data.data(); }
  const float* ptr() const { return data.data(); }
  float& at(int64_t r, int64_t c) { return data[static_cast<size_t>(r * cols() + c)]; }
  float at(int64_t r, int64_t c) const { return data[static_cast<size_t>(r * cols() + c)]; }
  bool empty() const { return data.empty(); }
};

std::string shape_string(const std::vector<int64_t>& shape);  // "[64, 172]"

}  // namespace shardq
