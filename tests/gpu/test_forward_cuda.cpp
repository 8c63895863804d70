// GPU decoder kernels (kernels/cuda/forward_ops.hpp) and layer (kernels/cuda/forward.hpp)
// against the CPU tier (kernels/cpu/forward_ops.hpp, worker/forward.hpp) on random data with
// awkward shapes and on the real stories260K layers (dim 64, 8 heads / 4 kv heads, hidden 172);
// attention both ways (tiled and rowwise kernels) up to Llama-3-8B's shapes.
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/error.hpp"
#include "kernels/cpu/forward_ops.hpp"
#include "kernels/cuda/forward.hpp"
#include "kernels/cuda/forward_ops.hpp"
#include "tests/gpu/gpu_check.hpp"
#include "worker/forward.hpp"

namespace shardq {
namespace {

using cuda::DeviceBuffer;
using cuda::to_device;
using test::check_tensor;
using test::random_vector;

TEST(ForwardCuda, Rmsnorm) {
  SHARDQ_REQUIRE_GPU();
  for (int64_t dim : {1, 7, 17, 64, 127, 172, 4097}) {
    const int64_t n = 5;
    const auto x = random_vector(n * dim, 1), w = random_vector(dim, 2);
    std::vector<float> ref(n * dim);
    cpu::rmsnorm(x.data(), w.data(), ref.data(), n, dim, 1e-5f);
    DeviceBuffer<float> dx = to_device(x), dw = to_device(w), dy(n * dim);
    cuda::rmsnorm(dx.get(), dw.get(), dy.get(), n, dim, 1e-5f, nullptr);
    const auto got = dy.to_host();
    EXPECT_TRUE(check_tensor("rmsnorm dim " + std::to_string(dim), got.data(), ref.data(), got.size(), 1e-6f, 2e-6f));
  }
}

TEST(ForwardCuda, RopeRotateHalf) {
  SHARDQ_REQUIRE_GPU();
  for (int head_dim : {2, 8, 64, 128}) {
    const int n_heads = 3;
    const int64_t n = 37;
    std::vector<int32_t> pos(n);
    for (int64_t t = 0; t < n; ++t) pos[t] = static_cast<int32_t>((t * 97) % 2048);  // angles up to ~2000 rad
    auto ref = random_vector(n * n_heads * head_dim, 3);
    DeviceBuffer<float> dx = to_device(ref);
    DeviceBuffer<int32_t> dpos = to_device(pos);
    cpu::rope_rotate_half(ref.data(), n, n_heads, head_dim, pos.data(), 10000.0f);
    cuda::rope_rotate_half(dx.get(), n, n_heads, head_dim, dpos.get(), 10000.0f, nullptr);
    const auto got = dx.to_host();
    // The angles are the host's to the bit (cpu::rope_inv_freq, one rounded product); the
    // device cosf/sinf are within 2 ulp of the host's, ~2.4e-7 of values up to ~4.
    EXPECT_TRUE(check_tensor("rope head_dim " + std::to_string(head_dim), got.data(), ref.data(), got.size(), 1e-5f, 1e-5f));
  }
}

TEST(ForwardCuda, TokenCosines) {
  SHARDQ_REQUIRE_GPU();
  for (int64_t dim : {1, 64, 300, 4096}) {
    const int64_t n = 9;
    auto a = random_vector(n * dim, 21), b = random_vector(n * dim, 22);
    for (int64_t i = 0; i < dim; ++i) {
      a[2 * dim + i] = 0.0f;            // a zero row: cos 0
      b[3 * dim + i] = a[3 * dim + i];  // parallel: cos 1
      b[4 * dim + i] = -a[4 * dim + i]; // opposite: cos -1
    }
    std::vector<double> want(n);
    cpu::token_cosines(a.data(), b.data(), n, dim, want.data());
    DeviceBuffer<float> da = to_device(a), db = to_device(b);
    DeviceBuffer<double> dc(n);
    cuda::token_cosines(da.get(), db.get(), n, dim, dc.get(), nullptr);
    const auto got = dc.to_host();
    for (int64_t t = 0; t < n; ++t) EXPECT_NEAR(got[t], want[t], 1e-12) << "dim " << dim << " token " << t;
    EXPECT_EQ(got[2], 0.0);
  }
}

struct AttentionCase {
  int n_seq, seq_len, n_heads, n_kv_heads, head_dim;
};

using AttentionFn = void (*)(const float*, const float*, const float*, float*, int, int, int, int, int, cudaStream_t);

// Both GPU kernels (the tiled one behind attention_causal and the rowwise reference) against
// the CPU tier on q, k, v of the given values.
// Tolerance atol 1e-5, rtol 1e-4: both sides are fp32 with one rounding of each score (sum,
// then × 1/sqrt(head_dim)) but in different summation orders (CPU: sgemm, softmax normalised
// before P·V; GPU: FMA chains, P unnormalised and O divided by the row sum at the end). With
// scores of standard deviation ~1.3 (q, k uniform in [-2, 2]) both sides are ~1e-6 from a
// double reference. Before any GPU run, the tiled kernel's own code run on the host (256
// cooperative threads a block) differed from the CPU tier by at most 1e-6 (≤ 7 % of the
// tolerance) on these shapes (2048 tokens with 4 of the heads), and by at most 4.5e-6 (≤ 5 %)
// on the steep inputs; a replica of the rowwise kernel's arithmetic by at most 1.5e-6 (≤ 7 %).
void expect_attention_matches_cpu(const AttentionCase& c, const std::vector<float>& q, const std::vector<float>& k,
                                  const std::vector<float>& v) {
  std::vector<float> ref(q.size());
  cpu::attention_causal(q.data(), k.data(), v.data(), ref.data(), c.n_seq, c.seq_len, c.n_heads, c.n_kv_heads, c.head_dim);
  DeviceBuffer<float> dq = to_device(q), dk = to_device(k), dv = to_device(v), dout(q.size());
  const std::pair<const char*, AttentionFn> paths[] = {{"tiled", &cuda::attention_causal},
                                                      {"rowwise", &cuda::attention_causal_rowwise}};
  for (const auto& [name, fn] : paths) {
    SHARDQ_CUDA_CHECK(cudaMemset(dout.get(), 0xff, dout.bytes()));  // NaN wherever a kernel writes nothing
    fn(dq.get(), dk.get(), dv.get(), dout.get(), c.n_seq, c.seq_len, c.n_heads, c.n_kv_heads, c.head_dim, nullptr);
    SHARDQ_CUDA_CHECK(cudaDeviceSynchronize());
    const auto got = dout.to_host();
    EXPECT_TRUE(check_tensor(std::string("attention ") + name, got.data(), ref.data(), got.size(), 1e-5f, 1e-4f));
  }
}

std::string attention_case_name(const ::testing::TestParamInfo<AttentionCase>& p) {
  const AttentionCase& c = p.param;
  return "seq" + std::to_string(c.n_seq) + "x" + std::to_string(c.seq_len) + "_h" + std::to_string(c.n_heads) + "_kv" +
         std::to_string(c.n_kv_heads) + "_d" + std::to_string(c.head_dim);
}

class AttentionCuda : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(AttentionCuda, MatchesCpu) {
  SHARDQ_REQUIRE_GPU();
  const AttentionCase c = GetParam();
  const int64_t n = static_cast<int64_t>(c.n_seq) * c.seq_len;
  const auto q = random_vector(n * c.n_heads * c.head_dim, 4, -2, 2);
  const auto k = random_vector(n * c.n_kv_heads * c.head_dim, 5, -2, 2);
  const auto v = random_vector(n * c.n_kv_heads * c.head_dim, 6);
  expect_attention_matches_cpu(c, q, k, v);
}

// The tile is 64 rows × 64 keys and head_dim is padded to 64, 128 or 256: lengths below, at and
// past a tile boundary, head_dims at, between and below the paddings (1, 17, 96, 200), several
// windows, GQA ratios 1 to 4, and Llama-3-8B's attention (32 query heads on 8 kv heads of 128)
// over a whole 2048-token calibration window and over 777 tokens (a partial last tile).
INSTANTIATE_TEST_SUITE_P(Shapes, AttentionCuda,
                         ::testing::Values(AttentionCase{1, 1, 1, 1, 8}, AttentionCase{2, 7, 4, 2, 8},
                                           AttentionCase{3, 17, 8, 4, 8}, AttentionCase{1, 65, 4, 4, 64},
                                           AttentionCase{2, 129, 8, 2, 128}, AttentionCase{1, 300, 2, 1, 256},
                                           AttentionCase{1, 33, 6, 3, 17}, AttentionCase{1, 64, 2, 1, 128},
                                           AttentionCase{1, 63, 2, 2, 96}, AttentionCase{2, 130, 3, 1, 200},
                                           AttentionCase{1, 66, 2, 1, 1}, AttentionCase{3, 100, 2, 2, 64},
                                           AttentionCase{1, 777, 32, 8, 128}, AttentionCase{1, 2048, 32, 8, 128}),
                         attention_case_name);

// Steep softmax: q, k on the grid 0.25·[-16, 16] make every score exact in fp32 whatever the
// summation order, with a standard deviation of ~5, so the running max moves often and by a
// lot (exp(m_old − m_new) far below 1) while the tolerance still measures only exp and the
// P·V sums.
class AttentionCudaSteep : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(AttentionCudaSteep, MatchesCpu) {
  SHARDQ_REQUIRE_GPU();
  const AttentionCase c = GetParam();
  const int64_t n = static_cast<int64_t>(c.n_seq) * c.seq_len;
  auto q = random_vector(n * c.n_heads * c.head_dim, 14, -4, 4);
  auto k = random_vector(n * c.n_kv_heads * c.head_dim, 15, -4, 4);
  for (float& x : q) x = std::round(x * 4.0f) / 4.0f;
  for (float& x : k) x = std::round(x * 4.0f) / 4.0f;
  const auto v = random_vector(n * c.n_kv_heads * c.head_dim, 16);
  expect_attention_matches_cpu(c, q, k, v);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionCudaSteep,
                         ::testing::Values(AttentionCase{1, 300, 2, 1, 128}, AttentionCase{2, 200, 4, 2, 64},
                                           AttentionCase{1, 777, 8, 2, 128}),
                         attention_case_name);

// On every device the build targets (sm_80 and later: ≥ 99 KiB of shared memory per block)
// the Llama head_dims run the tiled kernel, not the fallback.
TEST(ForwardCuda, AttentionTiledAvailable) {
  SHARDQ_REQUIRE_GPU();
  for (int head_dim : {1, 8, 64, 96, 128}) EXPECT_TRUE(cuda::attention_tiled_available(head_dim)) << head_dim;
  std::printf("tiled attention at head_dim 256 on %s: %s\n", cuda::device_description().c_str(),
              cuda::attention_tiled_available(256) ? "yes" : "no (rowwise fallback)");
}

// Shapes are checked before anything touches the device.
TEST(ForwardCuda, AttentionRejectsBadShapes) {
  for (AttentionFn fn : {&cuda::attention_causal, &cuda::attention_causal_rowwise}) {
    EXPECT_THROW(fn(nullptr, nullptr, nullptr, nullptr, 1, 4, 2, 1, 0, nullptr), cuda_error);
    EXPECT_THROW(fn(nullptr, nullptr, nullptr, nullptr, 1, 4, 2, 1, 257, nullptr), cuda_error);
    EXPECT_THROW(fn(nullptr, nullptr, nullptr, nullptr, 1, 4, 6, 4, 64, nullptr), cuda_error);
    EXPECT_THROW(fn(nullptr, nullptr, nullptr, nullptr, 1, 4, 0, 1, 64, nullptr), cuda_error);
    EXPECT_THROW(fn(nullptr, nullptr, nullptr, nullptr, 1, 4, 2, 0, 64, nullptr), cuda_error);
  }
}

TEST(ForwardCuda, Swiglu) {
  SHARDQ_REQUIRE_GPU();
  for (int64_t n : {1, 7, 4097}) {
    const auto g = random_vector(n, 7, -10, 10), u = random_vector(n, 8);
    std::vector<float> ref(n);
    cpu::swiglu(g.data(), u.data(), ref.data(), n);
    DeviceBuffer<float> dg = to_device(g), du = to_device(u);
    cuda::swiglu(dg.get(), du.get(), dg.get(), n, nullptr);
    const auto got = dg.to_host();
    EXPECT_TRUE(check_tensor("swiglu", got.data(), ref.data(), got.size(), 1e-6f, 4e-6f));
  }
}

TEST(ForwardCuda, LayerForwardStories260K) {
  SHARDQ_REQUIRE_GPU();
  const test::Stories260K m = test::load_stories260k();
  const int n_seq = 2, seq_len = 37;
  std::vector<float> hidden(static_cast<std::size_t>(n_seq) * seq_len * m.dim);
  for (std::size_t t = 0; t < hidden.size() / m.dim; ++t)  // real embeddings of tokens 3t mod vocab
    std::copy_n(m.token_embedding.begin() + ((3 * t) % m.vocab) * m.dim, m.dim, hidden.begin() + t * m.dim);
  std::vector<float> h_cpu = hidden, h_gpu = hidden;
  for (int l = 0; l < m.n_layers; ++l) {
    ModelConfig c;
    const LayerWeights w = test::stories_layer(m, l, c);
    LayerTaps taps_cpu, taps_gpu;
    layer_forward(c, w, h_cpu.data(), n_seq, seq_len, &taps_cpu);
    cuda::layer_forward_cuda(c, w, h_gpu.data(), n_seq, seq_len, &taps_gpu);
    const std::string tag = "layer " + std::to_string(l);
    EXPECT_TRUE(check_tensor(tag + " hidden", h_gpu.data(), h_cpu.data(), h_cpu.size(), 1e-4f, 1e-4f));
    EXPECT_TRUE(check_tensor(tag + " o_in", taps_gpu.o_in.ptr(), taps_cpu.o_in.ptr(), taps_cpu.o_in.data.size(), 1e-4f, 1e-4f));
    EXPECT_TRUE(check_tensor(tag + " down_in", taps_gpu.down_in.ptr(), taps_cpu.down_in.ptr(),
                             taps_cpu.down_in.data.size(), 1e-4f, 1e-4f));
    h_gpu = h_cpu;  // each layer compared from the same input
  }
}

// The staged upload (LayerForwardCuda::stage on another thread while the current layer runs,
// then load_staged) computes what a plain load computes, bit for bit, layer after layer (the
// buffer sets trade places at every swap); load_staged of weights that were not staged, or
// of a changed copy, falls back to the plain load.
TEST(ForwardCuda, StagedLoadMatchesLoad) {
  SHARDQ_REQUIRE_GPU();
  const test::Stories260K m = test::load_stories260k();
  const int n_seq = 2, seq_len = 37;
  const int64_t n = static_cast<int64_t>(n_seq) * seq_len;
  const std::vector<float> x = random_vector(static_cast<std::size_t>(n * m.dim), 61);
  cuda::unique_stream stream = cuda::make_stream();
  ModelConfig c;
  std::vector<LayerWeights> layers;
  for (int l = 0; l < m.n_layers; ++l) layers.push_back(test::stories_layer(m, l, c));
  const auto run = [&](cuda::LayerForwardCuda& layer, DeviceBuffer<float>& d) {
    layer.forward(d.get(), n_seq, seq_len);
    SHARDQ_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
    return d.to_host();
  };
  cuda::LayerForwardCuda plain(c, stream.get()), staged(c, stream.get());
  DeviceBuffer<float> d_plain = to_device(x), d_staged = to_device(x);
  staged.load(layers[0]);
  for (int l = 0; l < m.n_layers; ++l) {
    plain.load(layers[static_cast<std::size_t>(l)]);
    const std::vector<float> want = run(plain, d_plain);
    std::thread stager;
    if (l + 1 < m.n_layers) stager = std::thread([&] { staged.stage(layers[static_cast<std::size_t>(l) + 1]); });
    const std::vector<float> got = run(staged, d_staged);  // runs while the next layer is staged
    if (stager.joinable()) stager.join();
    EXPECT_EQ(got, want) << "layer " << l;
    if (l + 1 < m.n_layers) staged.load_staged(layers[static_cast<std::size_t>(l) + 1]);
  }
  // Not what was staged: a copy of layer 0 (other buffers) loads plainly.
  staged.stage(layers[1]);
  const LayerWeights copy = layers[0];
  staged.load_staged(copy);
  plain.load(layers[0]);
  DeviceBuffer<float> a = to_device(x), b = to_device(x);
  EXPECT_EQ(run(staged, a), run(plain, b));
}

}  // namespace
}  // namespace shardq
