// GPU quantizers against the CPU tier: packing and RTN bit for bit; GPTQ codes compared
// with cpu::gptq_quantize — the fraction of equal codes (and scales, zeros) is printed and
// must be ≥ 99.9 %, and where a row first differs it differs by one step (a value the two
// sgemm orders rounded to either side of a grid tie); on the real stories260K linears and on
// random weights with awkward shapes.
// The lazy-batch update kernel is its ordered fma sum bit for bit.
// Arbitrary row-range splits on the GPU agree with the whole run to the same standard; the
// job's splits into whole 128-row tiles must be bit-identical (RankRowSplitsAreBitIdentical).
// The device path of the job engine (gptq_quantize_rows_device): with the CPU tier's factor
// uploaded it meets the same standard against cpu::gptq_quantize_rows, and its dequantized
// rows equal dequantize(out) bit for bit; on stories260K with the GPU factor, including
// relative_output_error_cuda against cpu::relative_output_error (1e-5 relative).
// relative_output_error_cuda on random shapes (one of them 65 row tiles) and its 0 / inf
// conventions.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "common/dtype.hpp"
#include "common/error.hpp"
#include "kernels/cpu/gptq.hpp"
#include "kernels/cpu/hessian.hpp"
#include "kernels/cpu/pack.hpp"
#include "kernels/cpu/quant_error.hpp"
#include "kernels/cpu/rtn.hpp"
#include "kernels/cuda/gptq.hpp"
#include "kernels/cuda/gptq_factor.hpp"
#include "kernels/cuda/pack.hpp"
#include "kernels/cuda/quant_error.hpp"
#include "kernels/cuda/rtn.hpp"
#include "kernels/quantize.hpp"
#include "tests/gpu/gpu_check.hpp"
#include "worker/layer_quantize.hpp"

namespace shardq {
namespace {

using test::hessian_of;
using test::random_vector;

TEST(PackCuda, BitIdenticalToCpu) {
  SHARDQ_REQUIRE_GPU();
  for (int bits : {2, 3, 4, 8}) {
    for (int64_t cols : {1, 7, 17, 65, 127, 172, 4097}) {
      const int64_t rows = 3;
      std::mt19937 rng(static_cast<uint32_t>(bits * 10000 + cols));
      std::vector<uint8_t> codes(rows * cols);
      for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1u));
      EXPECT_EQ(cuda::pack_codes_host(codes, rows, cols, bits), cpu::pack_codes(codes, rows, cols, bits))
          << bits << " bits, " << cols << " cols";
    }
  }
}

TEST(RtnCuda, BitIdenticalToCpu) {
  SHARDQ_REQUIRE_GPU();
  for (int bits : {2, 3, 4, 8})
    for (int group : {-1, 32, 128})
      for (bool sym : {false, true})
        for (int64_t cols : {1, 17, 172, 300}) {
          const int64_t rows = 9;
          Tensor w({rows, cols}, random_vector(rows * cols, static_cast<uint32_t>(cols + bits)));
          if (cols > 1) w.data[3] = 0.0f, w.data[cols] = 0.0f;
          QuantConfig cfg;
          cfg.method = quant_method::rtn;
          cfg.bits = bits;
          cfg.group_size = group;
          cfg.sym = sym;
          const QuantizedLinear a = cuda::rtn_quantize_cuda(w, cfg), b = cpu::rtn_quantize(w, cfg);
          const std::string tag = std::to_string(bits) + "b g" + std::to_string(group) + (sym ? " sym" : "") + " cols " + std::to_string(cols);
          EXPECT_EQ(a.qweight, b.qweight) << tag;
          EXPECT_EQ(a.scales, b.scales) << tag;
          EXPECT_EQ(a.zeros, b.zeros) << tag;
        }
}

// Codes, scales and zeros of a GPU result against the CPU's. Both run the same operations up
// to the lazy-batch sgemm, whose summation order differs (cuBLAS vs OpenBLAS): a row is equal
// until a value lands on the other side of a grid rounding tie; that first difference in
// processing order (perm) must be one step, later ones in the row follow from its changed
// error feedback. Prints the match fraction and the first mismatches (llm.c check_tensor).
void expect_gptq_close(const QuantizedLinear& gpu, const QuantizedLinear& cpu_q, const std::vector<int32_t>& perm,
                       const std::string& tag) {
  ASSERT_EQ(gpu.g_idx, cpu_q.g_idx) << tag;
  const auto a = cpu::unpack_codes(gpu.qweight, gpu.rows, gpu.cols, gpu.bits);
  const auto b = cpu::unpack_codes(cpu_q.qweight, cpu_q.rows, cpu_q.cols, cpu_q.bits);
  std::size_t equal = 0, rows_diverged = 0, first_not_neighbour = 0;
  std::string first;
  for (int64_t r = 0; r < gpu.rows; ++r) {
    bool diverged = false;
    for (int64_t i = 0; i < gpu.cols; ++i) {
      const std::size_t at = static_cast<std::size_t>(r * gpu.cols + perm[i]);
      if (a[at] == b[at]) {
        ++equal;
        continue;
      }
      if (!diverged) {
        diverged = true;
        ++rows_diverged;
        first_not_neighbour += std::abs(int{a[at]} - int{b[at]}) != 1;
        if (first.size() < 400)
          first += " (" + std::to_string(r) + "," + std::to_string(perm[i]) + ") gpu " + std::to_string(a[at]) +
                   " cpu " + std::to_string(b[at]);
      }
    }
  }
  std::size_t scales_equal = 0, zeros_equal = 0;
  for (std::size_t i = 0; i < gpu.scales.size(); ++i) {
    scales_equal += gpu.scales[i] == cpu_q.scales[i];
    zeros_equal += gpu.zeros[i] == cpu_q.zeros[i];
  }
  const double fraction = static_cast<double>(equal) / static_cast<double>(a.size());
  std::printf("%s: %.5f%% of %zu codes equal, %zu of %lld rows diverge%s%s\n", tag.c_str(), 100.0 * fraction, a.size(),
              rows_diverged, static_cast<long long>(gpu.rows), first.empty() ? "" : "; first mismatches:", first.c_str());
  EXPECT_GE(fraction, 0.999) << tag;
  EXPECT_EQ(first_not_neighbour, 0u) << tag << ": a row's first differing code is more than one step away";
  EXPECT_GE(static_cast<double>(scales_equal), 0.999 * static_cast<double>(gpu.scales.size())) << tag << " scales";
  EXPECT_GE(static_cast<double>(zeros_equal), 0.999 * static_cast<double>(gpu.zeros.size())) << tag << " zeros";
}

// Bit-for-bit equality of a device-dequantized weight with dequantize(out).
void expect_bits_equal(const std::vector<float>& got, const Tensor& want, const std::string& tag) {
  ASSERT_EQ(got.size(), want.data.size()) << tag;
  std::size_t bad = 0;
  std::string first;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want.data[i], sizeof(float)) == 0) continue;
    if (bad++ < 5) first += " [" + std::to_string(i) + "] gpu " + std::to_string(got[i]) + " dequantize " + std::to_string(want.data[i]);
  }
  EXPECT_EQ(bad, 0u) << tag << ": dequantized weights differ from dequantize(out):" << first;
}

double relative_difference(double got, double want) { return std::fabs(got - want) / std::fabs(want); }

struct GptqCase {
  int64_t rows, cols;
  int bits, group, block;
  bool sym, act_order;

  QuantConfig config() const {
    return QuantConfig{.bits = bits, .group_size = group, .sym = sym, .act_order = act_order, .block_size = block};
  }
  std::string tag() const {
    return "gptq " + std::to_string(rows) + "x" + std::to_string(cols) + " " + std::to_string(bits) + "b g" +
           std::to_string(group) + " blk" + std::to_string(block) + (sym ? " sym" : "") + (act_order ? " act" : "");
  }
};

const std::vector<GptqCase> gptq_cases = {
    GptqCase{1, 7, 4, 128, 128, false, true},    GptqCase{17, 65, 4, 32, 16, false, true},
    GptqCase{65, 172, 3, 64, 128, true, true},   GptqCase{127, 300, 2, 128, 128, false, false},
    GptqCase{300, 256, 8, -1, 64, false, true},  GptqCase{129, 512, 4, 128, 128, false, true},
    GptqCase{64, 384, 4, 96, 64, true, false}};

std::string gptq_case_name(const ::testing::TestParamInfo<GptqCase>& p) {
  const GptqCase& c = p.param;
  return std::to_string(c.rows) + "x" + std::to_string(c.cols) + "_" + std::to_string(c.bits) + "b_g" +
         (c.group > 0 ? std::to_string(c.group) : "row") + "_blk" + std::to_string(c.block) + (c.sym ? "_sym" : "") +
         (c.act_order ? "_act" : "");
}

// The GPU run uses the GPU factor (gptq_prepare_cuda): its U differs from the CPU's by fp32
// round-off (tests/gpu/test_gptq_factor_cuda.cpp), a perturbation of the same size as the
// sgemm order's, so the same standard applies.
class GptqCuda : public ::testing::TestWithParam<GptqCase> {};

TEST_P(GptqCuda, MatchesCpuRandom) {
  SHARDQ_REQUIRE_GPU();
  const GptqCase c = GetParam();
  const int64_t n = 2 * c.cols + 64;
  const Tensor h = hessian_of(random_vector(n * c.cols, 11), n, c.cols, {0, c.cols / 2});
  const Tensor w({c.rows, c.cols}, random_vector(c.rows * c.cols, 12));
  const QuantConfig cfg = c.config();
  expect_gptq_close(cuda::gptq_quantize_cuda(w, h, cfg), cpu::gptq_quantize(w, h, cfg), cpu::gptq_prepare(h, cfg).perm,
                    c.tag());
}

INSTANTIATE_TEST_SUITE_P(Shapes, GptqCuda, ::testing::ValuesIn(gptq_cases), gptq_case_name);

// The rows path alone: the CPU tier's factor uploaded, so only the sgemm order differs.
class GptqDevice : public ::testing::TestWithParam<GptqCase> {};

TEST_P(GptqDevice, RowsMatchCpuAndDequantizeExactly) {
  SHARDQ_REQUIRE_GPU();
  const GptqCase c = GetParam();
  const int64_t n = 2 * c.cols + 64;
  const Tensor h = hessian_of(random_vector(n * c.cols, 13), n, c.cols, {c.cols - 1});
  const Tensor w({c.rows, c.cols}, random_vector(c.rows * c.cols, 14));
  const QuantConfig cfg = c.config();
  const cpu::GptqFactor factor = cpu::gptq_prepare(h, cfg);
  QuantizedLinear want = cpu::gptq_make_output(c.rows, factor, cfg);
  cpu::gptq_quantize_rows(w, factor, cfg, 0, c.rows, want);

  const cuda::unique_stream stream = cuda::make_stream();
  const cuda::GptqFactorCuda f = cuda::gptq_factor_upload(factor, stream.get());
  const cuda::DeviceBuffer<float> d_w = cuda::to_device(w.data);
  cuda::DeviceBuffer<float> d_wq(w.data.size());
  QuantizedLinear got = f.make_output(c.rows, cfg);
  cuda::gptq_quantize_rows_device(d_w.get(), c.rows, f, cfg, 0, c.rows, got, d_wq.get(), stream.get());
  expect_gptq_close(got, want, factor.perm, "device " + c.tag());
  expect_bits_equal(d_wq.to_host(), dequantize(got), "device " + c.tag());

  EXPECT_THROW(cuda::gptq_quantize_rows_device(d_w.get(), c.rows, f, cfg, 0, c.rows + 1, got, nullptr, stream.get()),
               error);
  QuantizedLinear wrong = f.make_output(c.rows + 1, cfg);
  EXPECT_THROW(cuda::gptq_quantize_rows_device(d_w.get(), c.rows, f, cfg, 0, c.rows, wrong, nullptr, stream.get()),
               error);
}

INSTANTIATE_TEST_SUITE_P(Shapes, GptqDevice, ::testing::ValuesIn(gptq_cases), gptq_case_name);

// The job engine's path on real weights: device H → gptq_prepare_cuda → device rows with the
// dequantized output → relative_output_error_cuda, against cpu::gptq_quantize_rows on the same
// factor (downloaded; the factor itself is checked against the CPU tier's in
// test_gptq_factor_cuda.cpp on this Hessian) and cpu::relative_output_error.
TEST(GptqCuda, Stories260KLinears) {
  SHARDQ_REQUIRE_GPU();
  const test::Stories260K m = test::load_stories260k();
  // Inputs of width dim: the real token embeddings (all 512 tokens) as calibration activations.
  const Tensor h = hessian_of(m.token_embedding, m.vocab, m.dim);
  QuantConfig cfg;
  cfg.group_size = 32;  // dim is 64: two groups per row
  const cuda::unique_stream stream = cuda::make_stream();
  const cuda::DeviceBuffer<float> d_h = cuda::to_device(h.data);
  const cuda::GptqFactorCuda f = cuda::gptq_prepare_cuda(d_h.get(), m.dim, cfg, stream.get());
  const cpu::GptqFactor factor = f.to_host();
  const int64_t d = m.dim, kv = m.kv_dim(), hid = m.hidden;
  for (int l = 0; l < m.n_layers; ++l) {
    for (const auto& [name, all, rows] : {std::tuple{"wq", &m.wq, d}, std::tuple{"wk", &m.wk, kv},
                                          std::tuple{"w1", &m.w1, hid}, std::tuple{"w3", &m.w3, hid}}) {
      const std::string tag = std::string("stories260K layer ") + std::to_string(l) + " " + name;
      const Tensor w({rows, d}, std::vector<float>(all->begin() + l * rows * d, all->begin() + (l + 1) * rows * d));
      const cuda::DeviceBuffer<float> d_w = cuda::to_device(w.data);
      cuda::DeviceBuffer<float> d_wq(w.data.size());
      QuantizedLinear got = f.make_output(rows, cfg);
      cuda::gptq_quantize_rows_device(d_w.get(), rows, f, cfg, 0, rows, got, d_wq.get(), stream.get());
      QuantizedLinear want = cpu::gptq_make_output(rows, factor, cfg);
      cpu::gptq_quantize_rows(w, factor, cfg, 0, rows, want);
      expect_gptq_close(got, want, factor.perm, tag);
      const Tensor wq = dequantize(got);
      expect_bits_equal(d_wq.to_host(), wq, tag);
      const double e_gpu = cuda::relative_output_error_cuda(d_w.get(), d_wq.get(), d_h.get(), rows, d, stream.get());
      const double e_cpu = cpu::relative_output_error(w, wq, h);
      EXPECT_LE(relative_difference(e_gpu, e_cpu), 1e-5) << tag << ": gpu " << e_gpu << " cpu " << e_cpu;
    }
  }
}

TEST(GptqCuda, RowSplitsMatchWhole) {
  SHARDQ_REQUIRE_GPU();
  const int64_t rows = 301, cols = 192, n = 512;
  const Tensor h = hessian_of(random_vector(n * cols, 21), n, cols);
  const Tensor w({rows, cols}, random_vector(rows * cols, 22));
  QuantConfig cfg;
  cfg.group_size = 64;
  const cpu::GptqFactor factor = cpu::gptq_prepare(h, cfg);
  QuantizedLinear whole = cpu::gptq_make_output(rows, factor, cfg), split = whole;
  cuda::gptq_quantize_rows_cuda(w, factor, cfg, 0, rows, whole);
  for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, 1}, {1, 100}, {100, 229}, {229, 301}})
    cuda::gptq_quantize_rows_cuda(w, factor, cfg, r0, r1, split);
  expect_gptq_close(split, whole, factor.perm, "gptq row splits vs whole");
}

// [0, r) + [r, rows) on the device path with the GPU factor: the same standard as a whole
// run, and each part's dequantized rows land in their place of d_wq, equal to dequantize.
TEST(GptqDevice, RowSplitMatchesWhole) {
  SHARDQ_REQUIRE_GPU();
  const int64_t rows = 301, cols = 192, n = 512;
  const Tensor h = hessian_of(random_vector(n * cols, 23), n, cols, {7});
  const Tensor w({rows, cols}, random_vector(rows * cols, 24));
  const QuantConfig cfg = GptqCase{rows, cols, 4, 64, 128, false, true}.config();
  const cuda::unique_stream stream = cuda::make_stream();
  const cuda::DeviceBuffer<float> d_h = cuda::to_device(h.data), d_w = cuda::to_device(w.data);
  const cuda::GptqFactorCuda f = cuda::gptq_prepare_cuda(d_h.get(), cols, cfg, stream.get());
  cuda::DeviceBuffer<float> d_wq_whole(w.data.size()), d_wq_split(w.data.size());
  QuantizedLinear whole = f.make_output(rows, cfg), split = f.make_output(rows, cfg);
  cuda::gptq_quantize_rows_device(d_w.get(), rows, f, cfg, 0, rows, whole, d_wq_whole.get(), stream.get());
  for (const int64_t r : {int64_t{1}, int64_t{129}, int64_t{300}}) {
    cuda::gptq_quantize_rows_device(d_w.get(), rows, f, cfg, 0, r, split, d_wq_split.get(), stream.get());
    cuda::gptq_quantize_rows_device(d_w.get(), rows, f, cfg, r, rows, split, d_wq_split.get(), stream.get());
    const std::string tag = "device split at " + std::to_string(r);
    expect_gptq_close(split, whole, f.perm, tag);
    expect_bits_equal(d_wq_split.to_host(), dequantize(split), tag);
  }
  expect_bits_equal(d_wq_whole.to_host(), dequantize(whole), "device whole");
}

// The lazy-batch update against its definition, bit for bit: every element of W[:, b1:] minus
// the fma sum of Err[:, k] · U[b0 + k, b1:] in ascending k from +0 (std::fma and the device's
// fmaf are both the correctly rounded fused multiply-add), the columns before b1 untouched.
// Shapes leave partial 128-tiles in rows and columns, row counts that are and are not
// multiples of 4 (the float4 and the scalar epilogue, each also with a partial column tile),
// a lone partial 8-step of k and full steps followed by a partial one, one-column blocks,
// and b1 = cols (nothing to do).
TEST(GptqCuda, LazyUpdateIsTheOrderedFmaSumBitForBit) {
  SHARDQ_REQUIRE_GPU();
  struct Case {
    int64_t rows, cols, b0, b1;
  };
  const cuda::unique_stream stream = cuda::make_stream();
  uint32_t seed = 300;
  for (const Case& c : {Case{1, 9, 0, 1}, Case{7, 300, 128, 256}, Case{130, 263, 0, 128}, Case{1000, 640, 256, 384},
                        Case{1003, 517, 384, 389}, Case{2048, 1024, 0, 128}, Case{513, 129, 0, 128},
                        Case{64, 256, 128, 256}, Case{1003, 300, 100, 213}, Case{1000, 300, 0, 128},
                        Case{4, 140, 0, 13}}) {
    const int64_t k_len = c.b1 - c.b0;
    const std::vector<float> wt = random_vector(c.rows * c.cols, ++seed), err = random_vector(k_len * c.rows, ++seed),
                             u = random_vector(c.cols * c.cols, ++seed);
    cuda::DeviceBuffer<float> d_wt = cuda::to_device(wt);
    const cuda::DeviceBuffer<float> d_err = cuda::to_device(err), d_u = cuda::to_device(u);
    cuda::gptq_lazy_update(d_wt.get(), d_err.get(), d_u.get(), c.rows, c.cols, c.b0, c.b1, stream.get());
    SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
    const std::vector<float> got = d_wt.to_host();
    std::vector<float> want = wt;
    for (int64_t col = c.b1; col < c.cols; ++col)
      for (int64_t r = 0; r < c.rows; ++r) {
        float acc = 0.0f;
        for (int64_t k = 0; k < k_len; ++k) acc = std::fma(err[k * c.rows + r], u[(c.b0 + k) * c.cols + col], acc);
        want[col * c.rows + r] = wt[col * c.rows + r] - acc;
      }
    std::size_t differ = 0, first = want.size();
    for (std::size_t i = 0; i < want.size(); ++i)
      if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) {
        if (differ++ == 0) first = i;
      }
    EXPECT_EQ(differ, 0u) << c.rows << " x " << c.cols << " block [" << c.b0 << ", " << c.b1 << "): first at column "
                          << (first / c.rows) << " row " << (first % c.rows) << ": gpu "
                          << (first < want.size() ? got[first] : 0.0f) << " want "
                          << (first < want.size() ? want[first] : 0.0f);
  }
}

// The job's row splits (worker gptq_rank_rows: whole 128-row tiles per rank) give the codes,
// scales, zeros and dequantized rows of the one-rank run bit for bit, for 2 to 5 ranks: the
// DESIGN's "bit-identical for any number of ranks" on the GPU. Rows are independent given U,
// and the lazy update sums every element in one order whatever the row count (the test below).
TEST(GptqDevice, RankRowSplitsAreBitIdentical) {
  SHARDQ_REQUIRE_GPU();
  const int64_t rows = 1000, cols = 640, n = 1024;
  const Tensor h = hessian_of(random_vector(n * cols, 25), n, cols);
  const Tensor w({rows, cols}, random_vector(rows * cols, 26));
  const QuantConfig cfg = GptqCase{rows, cols, 4, 128, 128, false, true}.config();
  const cuda::unique_stream stream = cuda::make_stream();
  const cuda::DeviceBuffer<float> d_h = cuda::to_device(h.data), d_w = cuda::to_device(w.data);
  const cuda::GptqFactorCuda f = cuda::gptq_prepare_cuda(d_h.get(), cols, cfg, stream.get());
  cuda::DeviceBuffer<float> d_wq_whole(w.data.size()), d_wq_split(w.data.size());
  QuantizedLinear whole = f.make_output(rows, cfg);
  cuda::gptq_quantize_rows_device(d_w.get(), rows, f, cfg, 0, rows, whole, d_wq_whole.get(), stream.get());
  const std::vector<float> wq_whole = d_wq_whole.to_host();
  for (int n_ranks = 2; n_ranks <= 5; ++n_ranks) {
    QuantizedLinear split = f.make_output(rows, cfg);
    for (int rank = 0; rank < n_ranks; ++rank) {
      const auto [r0, r1] = gptq_rank_rows(rows, n_ranks, rank);
      cuda::gptq_quantize_rows_device(d_w.get(), rows, f, cfg, r0, r1, split, d_wq_split.get(), stream.get());
    }
    const std::string tag = std::to_string(n_ranks) + " ranks";
    EXPECT_EQ(split.qweight, whole.qweight) << tag;
    EXPECT_EQ(split.scales, whole.scales) << tag;
    EXPECT_EQ(split.zeros, whole.zeros) << tag;
    const std::vector<float> wq_split = d_wq_split.to_host();
    EXPECT_EQ(std::memcmp(wq_split.data(), wq_whole.data(), wq_whole.size() * sizeof(float)), 0) << tag;
  }
}

// relative_output_error_cuda against cpu::relative_output_error on an RTN-quantized weight
// (a realistic small W − Wq); 65537 × 256 is 65 output-error tiles, the last of one row.
TEST(QuantErrorCuda, MatchesCpu) {
  SHARDQ_REQUIRE_GPU();
  const cuda::unique_stream stream = cuda::make_stream();
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {7, 17}, {65, 172}, {300, 256}, {65537, 256}}) {
    const int64_t n = 2 * cols + 16;
    const Tensor h = hessian_of(random_vector(n * cols, static_cast<uint32_t>(81 + cols)), n, cols);
    const Tensor w({rows, cols}, random_vector(rows * cols, static_cast<uint32_t>(82 + rows)));
    QuantConfig cfg;
    cfg.method = quant_method::rtn;
    cfg.group_size = 32;
    const Tensor wq = dequantize(cpu::rtn_quantize(w, cfg));
    const cuda::DeviceBuffer<float> d_w = cuda::to_device(w.data), d_wq = cuda::to_device(wq.data),
                                    d_h = cuda::to_device(h.data);
    const double got = cuda::relative_output_error_cuda(d_w.get(), d_wq.get(), d_h.get(), rows, cols, stream.get());
    const double want = cpu::relative_output_error(w, wq, h);
    std::printf("quant error %lldx%lld: gpu %.9g cpu %.9g\n", static_cast<long long>(rows), static_cast<long long>(cols),
                got, want);
    EXPECT_GT(want, 0.0);
    EXPECT_LE(relative_difference(got, want), 1e-5) << rows << "x" << cols << ": gpu " << got << " cpu " << want;
    EXPECT_EQ(cuda::relative_output_error_cuda(d_w.get(), d_w.get(), d_h.get(), rows, cols, stream.get()), 0.0);
  }
}

TEST(QuantErrorCuda, ZeroAndInfinityConventions) {
  SHARDQ_REQUIRE_GPU();
  const int64_t rows = 5, cols = 9, n = 40;
  const Tensor h = hessian_of(random_vector(n * cols, 91), n, cols);
  const Tensor zero({rows, cols}), w({rows, cols}, random_vector(rows * cols, 92));
  const cuda::unique_stream stream = cuda::make_stream();
  const cuda::DeviceBuffer<float> d_h = cuda::to_device(h.data), d_zero = cuda::to_device(zero.data),
                                  d_w = cuda::to_device(w.data);
  EXPECT_EQ(cuda::relative_output_error_cuda(d_zero.get(), d_zero.get(), d_h.get(), rows, cols, stream.get()), 0.0);
  EXPECT_EQ(cuda::relative_output_error_cuda(d_zero.get(), d_w.get(), d_h.get(), rows, cols, stream.get()),
            std::numeric_limits<double>::infinity());
  EXPECT_EQ(cpu::relative_output_error(zero, w, h), std::numeric_limits<double>::infinity());
}

}  // namespace
}  // namespace shardq
