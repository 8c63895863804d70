// GPU quantizers against the CPU tier: packing and RTN bit for bit; GPTQ codes compared
// with cpu::gptq_quantize — the fraction of equal codes (and scales, zeros) is printed and
// must be ≥ 99.9 %, and where a row first differs it differs by one step (a value the two
// sgemm orders rounded to either side of a grid tie); on the real stories260K linears and on
// random weights with awkward shapes.
// Row-range splits on the GPU agree with the whole run to the same standard (not bit for bit:
// cuBLAS picks its sgemm kernel, hence its summation order, by the row count).
#include <cmath>
#include <cstdlib>

#include "common/dtype.hpp"
#include "kernels/cpu/gptq.hpp"
#include "kernels/cpu/hessian.hpp"
#include "kernels/cpu/pack.hpp"
#include "kernels/cpu/rtn.hpp"
#include "kernels/cuda/gptq.hpp"
#include "kernels/cuda/pack.hpp"
#include "kernels/cuda/rtn.hpp"
#include "tests/gpu/gpu_check.hpp"

namespace shardq {
namespace {

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

// H = 2/n XᵀX from the CPU accumulator, with `dead` columns of X zeroed.
Tensor hessian_of(const std::vector<float>& x, int64_t n, int64_t cols, std::initializer_list<int64_t> dead = {}) {
  std::vector<float> xs = x;
  for (int64_t c : dead)
    for (int64_t t = 0; t < n; ++t) xs[t * cols + c] = 0.0f;
  cpu::HessianAccumulator acc(cols);
  acc.add(xs.data(), n);
  return acc.finalize();
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

struct GptqCase {
  int64_t rows, cols;
  int bits, group, block;
  bool sym, act_order;
};

class GptqCuda : public ::testing::TestWithParam<GptqCase> {};

TEST_P(GptqCuda, MatchesCpuRandom) {
  SHARDQ_REQUIRE_GPU();
  const GptqCase c = GetParam();
  const int64_t n = 2 * c.cols + 64;
  const Tensor h = hessian_of(random_vector(n * c.cols, 11), n, c.cols, {0, c.cols / 2});
  const Tensor w({c.rows, c.cols}, random_vector(c.rows * c.cols, 12));
  QuantConfig cfg;
  cfg.bits = c.bits;
  cfg.group_size = c.group;
  cfg.block_size = c.block;
  cfg.sym = c.sym;
  cfg.act_order = c.act_order;
  const std::string tag = "gptq " + std::to_string(c.rows) + "x" + std::to_string(c.cols) + " " + std::to_string(c.bits) +
                          "b g" + std::to_string(c.group) + " blk" + std::to_string(c.block) + (c.sym ? " sym" : "") +
                          (c.act_order ? " act" : "");
  expect_gptq_close(cuda::gptq_quantize_cuda(w, h, cfg), cpu::gptq_quantize(w, h, cfg), cpu::gptq_prepare(h, cfg).perm, tag);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GptqCuda,
    ::testing::Values(GptqCase{1, 7, 4, 128, 128, false, true}, GptqCase{17, 65, 4, 32, 16, false, true},
                      GptqCase{65, 172, 3, 64, 128, true, true}, GptqCase{127, 300, 2, 128, 128, false, false},
                      GptqCase{300, 256, 8, -1, 64, false, true}, GptqCase{129, 512, 4, 128, 128, false, true},
                      GptqCase{64, 384, 4, 96, 64, true, false}),
    [](const ::testing::TestParamInfo<GptqCase>& p) {
      const GptqCase& c = p.param;
      return std::to_string(c.rows) + "x" + std::to_string(c.cols) + "_" + std::to_string(c.bits) + "b_g" +
             (c.group > 0 ? std::to_string(c.group) : "row") + "_blk" + std::to_string(c.block) + (c.sym ? "_sym" : "") +
             (c.act_order ? "_act" : "");
    });

TEST(GptqCuda, Stories260KLinears) {
  SHARDQ_REQUIRE_GPU();
  const test::Stories260K m = test::load_stories260k();
  // Inputs of width dim: the real token embeddings (all 512 tokens) as calibration activations.
  const Tensor h = hessian_of(m.token_embedding, m.vocab, m.dim);
  QuantConfig cfg;
  cfg.group_size = 32;  // dim is 64: two groups per row
  const std::vector<int32_t> perm = cpu::gptq_prepare(h, cfg).perm;
  const int64_t d = m.dim, kv = m.kv_dim(), hid = m.hidden;
  for (int l = 0; l < m.n_layers; ++l) {
    for (const auto& [name, all, rows] : {std::tuple{"wq", &m.wq, d}, std::tuple{"wk", &m.wk, kv},
                                          std::tuple{"w1", &m.w1, hid}, std::tuple{"w3", &m.w3, hid}}) {
      const Tensor w({rows, d}, std::vector<float>(all->begin() + l * rows * d, all->begin() + (l + 1) * rows * d));
      expect_gptq_close(cuda::gptq_quantize_cuda(w, h, cfg), cpu::gptq_quantize(w, h, cfg), perm,
                        std::string("stories260K layer ") + std::to_string(l) + " " + name);
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

}  // namespace
}  // namespace shardq
