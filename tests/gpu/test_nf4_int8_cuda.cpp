// NF4 and int8 on the GPU (kernels/cuda/nf4.hpp, kernels/cuda/int8.hpp) and RTN's device entry
// point (rtn_quantize_device / rtn_dequantize_device, kernels/cuda/rtn.hpp: what the GPU job
// engine calls) against the CPU tier, bit for bit — neither method has a data-dependent
// summation order, so nothing may differ:
//   every array and field of the QuantizedLinear (qweight, scales, zeros, g_idx, outlier_cols,
//   outlier_weights) equals cpu::nf4_quantize / cpu::int8_quantize / cpu::rtn_quantize, through
//   the host API (*_quantize_cuda) and the device-weight API (*_quantize_device);
//   the dequantized weights *_quantize_device leaves on the device, and those of
//   *_dequantize_device run on the CPU tier's own arrays, equal dequantize() bit for bit.
// Weights: random shapes with cols not a multiple of the NF4 block (1, 7, 17, 63, 65, 127, 172,
// 4097) and one row; rows that are constant, zero, zero in one block, fp32 extremes (±FLT_MAX,
// fp16 overflow, subnormals, values on fp16 rounding ties), values on the NF4 decision
// midpoints and on int8 rounding ties; int8 outlier thresholds off (0, negative), at a column
// maximum (strict >), between, and below every column maximum; the real stories260K linears.
// Shape checks (no device needed) run everywhere. Test: shardq_gpu_tests
// --gtest_filter='Nf4Cuda*:Int8Cuda*:RtnCudaDevice*:Nf4Int8Shapes*'.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <functional>
#include <iomanip>
#include <limits>
#include <sstream>
#include <type_traits>

#include "common/error.hpp"
#include "kernels/cpu/int8.hpp"
#include "kernels/cpu/nf4.hpp"
#include "kernels/cpu/pack.hpp"
#include "kernels/cpu/rtn.hpp"
#include "kernels/cuda/cuda_check.hpp"
#include "kernels/cuda/int8.hpp"
#include "kernels/cuda/nf4.hpp"
#include "kernels/cuda/rtn.hpp"
#include "kernels/quantize.hpp"
#include "tests/gpu/gpu_check.hpp"

namespace shardq {
namespace {

using cuda::DeviceBuffer;

template <typename T>
std::string show(T v) {
  std::ostringstream s;
  if constexpr (std::is_floating_point_v<T>) s << std::setprecision(9);
  s << +v;
  return s.str();
}

// Equal bit patterns element by element; on failure the count and the first 5 mismatches.
template <typename T>
::testing::AssertionResult same_array(const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << what << ": gpu has " << got.size() << " elements, cpu " << want.size();
  std::size_t bad = 0;
  std::string first;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(T)) == 0) continue;
    if (bad++ < 5) first += " [" + std::to_string(i) + "] gpu " + show(got[i]) + " cpu " + show(want[i]);
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << got.size() << " differ:" << first;
}

void expect_same_linear(const QuantizedLinear& gpu, const QuantizedLinear& cpu_q, const std::string& tag) {
  EXPECT_EQ(gpu.method, cpu_q.method) << tag;
  EXPECT_EQ(gpu.rows, cpu_q.rows) << tag;
  EXPECT_EQ(gpu.cols, cpu_q.cols) << tag;
  EXPECT_EQ(gpu.bits, cpu_q.bits) << tag;
  EXPECT_EQ(gpu.group_size, cpu_q.group_size) << tag;
  EXPECT_EQ(gpu.sym, cpu_q.sym) << tag;
  EXPECT_TRUE(same_array(gpu.qweight, cpu_q.qweight, tag + " qweight"));
  EXPECT_TRUE(same_array(gpu.scales, cpu_q.scales, tag + " scales"));
  EXPECT_TRUE(same_array(gpu.zeros, cpu_q.zeros, tag + " zeros"));
  EXPECT_TRUE(same_array(gpu.g_idx, cpu_q.g_idx, tag + " g_idx"));
  EXPECT_TRUE(same_array(gpu.outlier_cols, cpu_q.outlier_cols, tag + " outlier_cols"));
  EXPECT_TRUE(same_array(gpu.outlier_weights, cpu_q.outlier_weights, tag + " outlier_weights"));
}

// The engine's path: quantize from device weights on a stream, the dequantized weights left in
// a device buffer; also checks that d_w is left as it was.
using DeviceQuantize = std::function<QuantizedLinear(const float* d_w, float* d_wq, cudaStream_t stream)>;

void check_device_path(const Tensor& w, const DeviceQuantize& quantize, const QuantizedLinear& want,
                       const Tensor& want_dq, const std::string& tag) {
  cuda::unique_stream stream = cuda::make_stream();
  const DeviceBuffer<float> d_w = cuda::to_device(w.data);
  DeviceBuffer<float> d_wq(w.data.size());
  const QuantizedLinear got = quantize(d_w.get(), d_wq.get(), stream.get());
  expect_same_linear(got, want, tag + " (device weights)");
  EXPECT_TRUE(same_array(d_wq.to_host(), want_dq.data, tag + " dequantized by *_quantize_device"));
  EXPECT_TRUE(same_array(d_w.to_host(), w.data, tag + " device weights after quantizing"));
}

std::vector<float> device_dequantize_nf4(const QuantizedLinear& q) {
  const DeviceBuffer<uint8_t> d_codes = cuda::to_device(cpu::unpack_codes(q.qweight, q.rows, q.cols, q.bits));
  const DeviceBuffer<uint16_t> d_scales = cuda::to_device(q.scales);
  DeviceBuffer<float> d_wq(static_cast<std::size_t>(q.rows * q.cols));
  cuda::nf4_dequantize_device(d_codes.get(), d_scales.get(), q.rows, q.cols, d_wq.get(), nullptr);
  SHARDQ_CUDA_CHECK(cudaDeviceSynchronize());
  return d_wq.to_host();
}

std::vector<float> device_dequantize_int8(const QuantizedLinear& q) {
  const DeviceBuffer<uint8_t> d_codes = cuda::to_device(cpu::unpack_codes(q.qweight, q.rows, q.cols, q.bits));
  const DeviceBuffer<uint16_t> d_scales = cuda::to_device(q.scales), d_outlier_weights = cuda::to_device(q.outlier_weights);
  const DeviceBuffer<int32_t> d_outlier_cols = cuda::to_device(q.outlier_cols);
  DeviceBuffer<float> d_wq(static_cast<std::size_t>(q.rows * q.cols));
  cuda::int8_dequantize_device(d_codes.get(), d_scales.get(), d_outlier_cols.get(),
                               static_cast<int64_t>(q.outlier_cols.size()), d_outlier_weights.get(), q.rows, q.cols,
                               d_wq.get(), nullptr);
  SHARDQ_CUDA_CHECK(cudaDeviceSynchronize());
  return d_wq.to_host();
}

std::vector<float> device_dequantize_rtn(const QuantizedLinear& q) {
  const DeviceBuffer<uint8_t> d_codes = cuda::to_device(cpu::unpack_codes(q.qweight, q.rows, q.cols, q.bits));
  const DeviceBuffer<uint16_t> d_scales = cuda::to_device(q.scales);
  const DeviceBuffer<uint8_t> d_zeros = cuda::to_device(q.zeros);
  DeviceBuffer<float> d_wq(static_cast<std::size_t>(q.rows * q.cols));
  cuda::rtn_dequantize_device(d_codes.get(), d_scales.get(), d_zeros.get(), q.rows, q.cols, q.group_cols(), d_wq.get(),
                              nullptr);
  SHARDQ_CUDA_CHECK(cudaDeviceSynchronize());
  return d_wq.to_host();
}

void check_nf4(const Tensor& w, const std::string& tag) {
  const QuantizedLinear want = cpu::nf4_quantize(w);
  const Tensor want_dq = dequantize(want);
  expect_same_linear(cuda::nf4_quantize_cuda(w), want, tag + " nf4");
  check_device_path(
      w, [&](const float* d_w, float* d_wq, cudaStream_t s) { return cuda::nf4_quantize_device(d_w, w.rows(), w.cols(), d_wq, s); },
      want, want_dq, tag + " nf4");
  EXPECT_TRUE(same_array(device_dequantize_nf4(want), want_dq.data, tag + " nf4_dequantize_device"));
}

// Returns the CPU tier's outlier column count (for the callers' checks that a case has some).
std::size_t check_int8(const Tensor& w, float threshold, const std::string& tag_in) {
  const std::string tag = tag_in + " int8 threshold " + show(threshold);
  const QuantizedLinear want = cpu::int8_quantize(w, threshold);
  const Tensor want_dq = dequantize(want);
  expect_same_linear(cuda::int8_quantize_cuda(w, threshold), want, tag);
  check_device_path(
      w,
      [&](const float* d_w, float* d_wq, cudaStream_t s) {
        return cuda::int8_quantize_device(d_w, w.rows(), w.cols(), threshold, d_wq, s);
      },
      want, want_dq, tag);
  EXPECT_TRUE(same_array(device_dequantize_int8(want), want_dq.data, tag + " int8_dequantize_device"));
  return want.outlier_cols.size();
}

void check_rtn(const Tensor& w, const QuantConfig& cfg, const std::string& tag_in) {
  const std::string tag = tag_in + " rtn " + std::to_string(cfg.bits) + "b g" + std::to_string(cfg.group_size) +
                          (cfg.sym ? " sym" : "");
  const QuantizedLinear want = cpu::rtn_quantize(w, cfg);
  const Tensor want_dq = dequantize(want);
  check_device_path(
      w, [&](const float* d_w, float* d_wq, cudaStream_t s) { return cuda::rtn_quantize_device(d_w, w.rows(), w.cols(), cfg, d_wq, s); },
      want, want_dq, tag);
  EXPECT_TRUE(same_array(device_dequantize_rtn(want), want_dq.data, tag + " rtn_dequantize_device"));
}

QuantConfig rtn_config(int bits, int group_size, bool sym) {
  QuantConfig cfg;
  cfg.method = quant_method::rtn;
  cfg.bits = bits;
  cfg.group_size = group_size;
  cfg.sym = sym;
  return cfg;
}

std::string shape_tag(int64_t rows, int64_t cols) { return std::to_string(rows) + "x" + std::to_string(cols); }

// Uniform values with a per-row magnitude 10^u, u ∈ [-6, 4]: block scales from fp16
// subnormals to 10^4.
Tensor random_weights(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f), exponent(-6.0f, 4.0f);
  Tensor w({rows, cols});
  for (int64_t r = 0; r < rows; ++r) {
    const float magnitude = std::pow(10.0f, exponent(rng));
    for (int64_t c = 0; c < cols; ++c) w.at(r, c) = value(rng) * magnitude;
  }
  return w;
}

// LLM-like weights: N(0, 0.05) with every 13th input column 25 times larger (outlier features).
Tensor outlier_weights(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> value(0.0f, 0.05f);
  Tensor w({rows, cols});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) w.at(r, c) = value(rng) * (c % 13 == 5 ? 25.0f : 1.0f);
  return w;
}

std::vector<float> column_maxima(const Tensor& w) {
  std::vector<float> m(static_cast<std::size_t>(w.cols()), 0.0f);
  for (int64_t r = 0; r < w.rows(); ++r)
    for (int64_t c = 0; c < w.cols(); ++c) m[c] = std::max(m[c], std::fabs(w.at(r, c)));
  return m;
}

// Rows chosen to hit every branch and rounding edge of the two quantizers (150 columns: two
// full NF4 blocks and a partial one).
Tensor special_weights() {
  constexpr int64_t cols = 150;
  std::vector<std::vector<float>> rows;
  auto cyclic = [&](const std::vector<float>& pattern, int64_t period) {
    std::vector<float> row(cols, 0.0f);
    for (int64_t c = 0; c < cols; ++c) {
      const auto k = static_cast<std::size_t>(c % period);
      row[c] = k < pattern.size() ? pattern[k] : 0.0f;
    }
    rows.push_back(row);
  };
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const float fp16_half_tie = std::ldexp(1.0f, -25);  // half the smallest fp16 subnormal: rounds to 0 (even)

  cyclic({0.0f}, 1);                                    // all zero
  cyclic({0.3f}, 1);                                    // constant
  cyclic({-2.5f}, 1);                                   // constant negative
  {                                                     // first block zero, the rest random
    std::vector<float> row(cols, 0.0f);
    for (int64_t c = 64; c < cols; ++c) row[c] = u(rng);
    rows.push_back(row);
  }
  cyclic({FLT_MAX, -FLT_MAX, 1e38f, 65504.0f, 65519.0f, 65520.0f, -65520.0f, 1e5f, -7e4f, 1.0f, 0.0f, -1e-3f}, 12);
  cyclic({1e-40f, -1.4e-45f, 1e-39f, 0.0f, -5e-41f, FLT_MIN}, 6);  // fp32 subnormals (and the smallest normal)
  cyclic({fp16_half_tie, -fp16_half_tie}, 2);                      // block absmax on an fp16 tie
  cyclic({1.5f * fp16_half_tie, -1e-9f, 1e-8f, 3e-8f}, 4);         // fp16 subnormal scales
  cyclic({1.0f, 1e30f, -1e-30f, FLT_MIN}, 4);                      // huge next to tiny
  // Values on and next to the NF4 decision midpoints, with the block absmax 1 and 0.6875 (both
  // exact in fp16): the double comparison and the IEEE quotient decide.
  for (const float scale : {1.0f, 0.6875f}) {
    std::vector<float> pattern{scale};
    for (int k = 1; k < 16; ++k) {
      const double mid = 0.5 * (static_cast<double>(nf4_levels[k - 1]) + nf4_levels[k]);
      const float m = static_cast<float>(mid);
      for (const float v : {m, std::nextafter(m, 2.0f), std::nextafter(m, -2.0f)}) pattern.push_back(v * scale);
    }
    cyclic(pattern, 64);
  }
  // int8 at scale exactly 1 (absmax 127): round-half-even ties and the clamp at ±127.
  cyclic({127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, -126.5f, 126.49999f, -127.0f, 3.5f, 100.5f}, 13);
  cyclic({1e7f, -3e9f, 5.0f, -0.25f}, 4);  // absmax / 127 above the fp16 range: scale 65504, codes clamp
  {                                        // one spike among small values
    std::vector<float> row(cols);
    for (float& v : row) v = 1e-3f * u(rng);
    row[70] = 50.0f;
    rows.push_back(row);
  }
  cyclic({-1.0f, -1.25f, -2.0f, -1.75f, -1.5f}, 5);                 // negative only
  cyclic({std::nextafter(1.0f, 2.0f), -0.999f, 0.5f, 0.001f}, 4);   // absmax just above an fp16 value

  Tensor w({static_cast<int64_t>(rows.size()), cols});
  for (std::size_t r = 0; r < rows.size(); ++r) std::copy(rows[r].begin(), rows[r].end(), w.ptr() + r * cols);
  return w;
}

const std::vector<int64_t> awkward_cols = {1, 7, 17, 63, 64, 65, 127, 172, 4097};
const std::vector<int64_t> awkward_rows = {1, 3, 17};

TEST(Nf4Cuda, RandomShapesBitIdentical) {
  SHARDQ_REQUIRE_GPU();
  for (const int64_t rows : awkward_rows)
    for (const int64_t cols : awkward_cols)
      check_nf4(random_weights(rows, cols, static_cast<uint32_t>(rows * 10007 + cols)), "random " + shape_tag(rows, cols));
}

TEST(Nf4Cuda, SpecialRowsBitIdentical) {
  SHARDQ_REQUIRE_GPU();
  const Tensor w = special_weights();
  check_nf4(w, "special");
  for (int64_t r = 0; r < w.rows(); ++r) {  // each row alone: rows == 1
    const Tensor row({1, w.cols()}, std::vector<float>(w.ptr() + r * w.cols(), w.ptr() + (r + 1) * w.cols()));
    check_nf4(row, "special row " + std::to_string(r));
  }
}

TEST(Int8Cuda, RandomShapesBitIdentical) {
  SHARDQ_REQUIRE_GPU();
  for (const int64_t rows : awkward_rows)
    for (const int64_t cols : awkward_cols) {
      const std::string tag = "random " + shape_tag(rows, cols);
      check_int8(random_weights(rows, cols, static_cast<uint32_t>(rows * 7919 + cols)), 0.0f, tag);
      const Tensor w = outlier_weights(rows, cols, static_cast<uint32_t>(rows * 104729 + cols));
      std::vector<float> maxima = column_maxima(w);
      std::nth_element(maxima.begin(), maxima.begin() + maxima.size() / 2, maxima.end());
      check_int8(w, 0.0f, tag + " outlier features");
      check_int8(w, 0.5f, tag + " outlier features");
      const std::size_t n_out = check_int8(w, maxima[maxima.size() / 2], tag + " outlier features (median column)");
      EXPECT_LT(n_out, static_cast<std::size_t>(cols)) << tag << ": the median column is no outlier";
    }
}

TEST(Int8Cuda, OutlierThresholds) {
  SHARDQ_REQUIRE_GPU();
  for (const Tensor& w : {special_weights(), outlier_weights(33, 300, 5)}) {
    const std::string tag = "weights " + shape_tag(w.rows(), w.cols());
    const std::vector<float> maxima = column_maxima(w);
    const float lowest = *std::min_element(maxima.begin(), maxima.end());
    EXPECT_EQ(check_int8(w, 0.0f, tag), 0u) << tag << ": threshold 0 is off";
    EXPECT_EQ(check_int8(w, -1.0f, tag), 0u) << tag << ": a negative threshold is off";
    const std::size_t at_lowest = check_int8(w, lowest, tag + " (at the lowest column maximum)");
    EXPECT_LT(at_lowest, maxima.size()) << tag << ": a column whose maximum equals the threshold is kept";
    EXPECT_GT(at_lowest, 0u) << tag;
    // Every column with a weight above the smallest subnormal an outlier: codes all 128, scales 0
    // where nothing is left.
    const float tiny = std::numeric_limits<float>::denorm_min();
    const std::size_t all = check_int8(w, tiny, tag + " (below every column maximum)");
    EXPECT_EQ(all, static_cast<std::size_t>(std::count_if(maxima.begin(), maxima.end(), [&](float m) { return m > tiny; })));
    check_int8(w, 1.0f, tag);
    check_int8(w, 126.999f, tag);
    check_int8(w, 1e30f, tag);
  }
}

TEST(RtnCudaDevice, DeviceEntryPointAndDequantizeBitIdentical) {
  SHARDQ_REQUIRE_GPU();
  for (const int bits : {2, 3, 4, 8})
    for (const int group : {-1, 32, 128})
      for (const bool sym : {false, true}) {
        const QuantConfig cfg = rtn_config(bits, group, sym);
        check_rtn(special_weights(), cfg, "special");
        for (const int64_t cols : {1, 17, 172, 300})
          check_rtn(random_weights(5, cols, static_cast<uint32_t>(cols * 31 + bits)), cfg, "random " + shape_tag(5, cols));
      }
}

TEST(Nf4Int8Cuda, Stories260KLinears) {
  SHARDQ_REQUIRE_GPU();
  const test::Stories260K m = test::load_stories260k();
  std::size_t with_outliers = 0;
  for (int l = 0; l < m.n_layers; ++l) {
    ModelConfig c;
    const LayerWeights lw = test::stories_layer(m, l, c);
    const std::pair<const char*, const Tensor*> linears[] = {
        {"q_proj", &lw.q_proj}, {"k_proj", &lw.k_proj},       {"v_proj", &lw.v_proj},  {"o_proj", &lw.o_proj},
        {"gate_proj", &lw.gate_proj}, {"up_proj", &lw.up_proj}, {"down_proj", &lw.down_proj}};
    for (const auto& [name, w] : linears) {
      const std::string tag = "layer " + std::to_string(l) + " " + name;
      check_nf4(*w, tag);
      check_int8(*w, 0.0f, tag);
      with_outliers += check_int8(*w, 0.5f, tag) > 0;  // stories260K column maxima: about 0.1 to 1.9
      check_rtn(*w, rtn_config(4, 32, false), tag);
    }
  }
  EXPECT_GT(with_outliers, 0u) << "no stories260K linear had an int8 outlier column at threshold 0.5";
}

// Shape and config checks happen before anything touches the device (they run without one),
// and an empty weight gives the CPU tier's empty stored form.
TEST(Nf4Int8Shapes, BadShapesThrowEmptyRowsMatchCpu) {
  EXPECT_THROW(cuda::nf4_quantize_device(nullptr, -1, 64, nullptr, nullptr), error);
  EXPECT_THROW(cuda::int8_quantize_device(nullptr, 4, 0, 0.0f, nullptr, nullptr), error);
  EXPECT_THROW(cuda::int8_quantize_device(nullptr, -1, 8, 0.0f, nullptr, nullptr), error);
  EXPECT_THROW(cuda::rtn_quantize_device(nullptr, 4, 0, rtn_config(4, 32, false), nullptr, nullptr), error);
  EXPECT_THROW(cuda::rtn_quantize_device(nullptr, 4, 64, rtn_config(5, 32, false), nullptr, nullptr), spec_error);
  const Tensor empty({0, 70});
  expect_same_linear(cuda::nf4_quantize_device(nullptr, 0, 70, nullptr, nullptr), cpu::nf4_quantize(empty), "nf4 0x70");
  expect_same_linear(cuda::int8_quantize_device(nullptr, 0, 70, 0.5f, nullptr, nullptr), cpu::int8_quantize(empty, 0.5f),
                     "int8 0x70");
  expect_same_linear(cuda::rtn_quantize_device(nullptr, 0, 70, rtn_config(3, 32, true), nullptr, nullptr),
                     cpu::rtn_quantize(empty, rtn_config(3, 32, true)), "rtn 0x70");
}

}  // namespace
}  // namespace shardq
