// The sequential engine on the GPU (worker/cuda/sequential_engine_cuda.cpp) against the CPU
// engine, layer by layer on the real stories260K weights and embeddings: LIM, the quantized
// integers (GPTQ 4-bit g32 act-order; RTN, NF4 and int8 with outlier columns, bit for bit;
// a kept linear), rel_error, the propagated hidden states and the snapshot round trip. Both
// engines start every layer from the same hidden states, so each comparison measures one
// layer's difference only.
#include <cmath>

#include "comm/comm.hpp"
#include "common/error.hpp"
#include "kernels/cpu/pack.hpp"
#include "tests/gpu/gpu_check.hpp"
#include "worker/modules.hpp"
#include "worker/sequential_engine.hpp"

namespace shardq {
namespace {

// One process, a real MPI communicator of size 1 (MPI singleton init; finalized at exit).
Comm& single_rank() {
  static int argc = 1;
  static char name[] = "shardq_gpu_tests";
  static char* args[] = {name, nullptr};
  static char** argv = args;
  static MpiEnvironment env(&argc, &argv);
  static std::unique_ptr<Comm> comm = comm_create("mpi");
  return *comm;
}

std::vector<ModuleChoice> choices_for(const ModelConfig& c, int layer) {
  std::vector<ModuleChoice> out;
  for (const LinearModule& m : layer_modules(c, layer)) {
    ModuleChoice choice{m, true, QuantConfig{}};
    choice.quant.group_size = 32;
    if (m.kind == "up_proj") choice.quant.method = quant_method::rtn;
    if (m.kind == "o_proj") choice.quant.method = quant_method::nf4;
    if (m.kind == "gate_proj") {
      choice.quant.method = quant_method::int8;
      choice.quant.int8_outlier_threshold = 0.5f;  // some of stories260K's columns (maxima about 0.3 to 0.7)
    }
    if (m.kind == "v_proj") choice.quantized = false;
    out.push_back(choice);
  }
  return out;
}

TEST(SequentialEngineCuda, MatchesCpuEngineStories260K) {
  SHARDQ_REQUIRE_GPU();
  const test::Stories260K m = test::load_stories260k();
  MicroBatches mb{{2, 2, 1}, 64};
  std::vector<std::vector<float>> hidden;
  std::size_t token = 0;
  for (std::size_t i = 0; i < mb.mb_sizes.size(); ++i) {
    std::vector<float> h(static_cast<std::size_t>(mb.tokens(i)) * m.dim);
    for (std::size_t t = 0; t < h.size() / m.dim; ++t, ++token)  // real embeddings of tokens 7t mod vocab
      std::copy_n(m.token_embedding.begin() + ((7 * token) % m.vocab) * m.dim, m.dim, h.begin() + t * m.dim);
    hidden.push_back(std::move(h));
  }
  Comm& comm = single_rank();
  ModelConfig c;
  test::stories_layer(m, 0, c);
  auto cpu_engine = make_sequential_engine("cpu", c, mb, {});
  auto gpu_engine = make_sequential_engine("cuda", c, mb, {});
  EXPECT_EQ(gpu_engine->device().rfind("cuda:", 0), 0u);
  cpu_engine->set_hidden(hidden);
  gpu_engine->set_hidden(hidden);
  size_t gptq_equal = 0, gptq_codes = 0;
  for (int l = 0; l < m.n_layers; ++l) {
    const LayerWeights w = test::stories_layer(m, l, c);
    const std::string tag = "layer " + std::to_string(l);
    cpu_engine->load(w);
    gpu_engine->load(w);
    cpu_engine->calibrate(comm, {});
    size_t after = 0;
    gpu_engine->calibrate(comm, [&](size_t i) { EXPECT_EQ(i, after++); });
    EXPECT_EQ(after, mb.mb_sizes.size());
    EXPECT_NEAR(gpu_engine->lim_score(), cpu_engine->lim_score(), 1e-6) << tag;

    const auto choices = choices_for(c, l);
    const auto q_cpu = cpu_engine->quantize(choices, true, comm, {});
    const auto q_gpu = gpu_engine->quantize(choices, true, comm, {});
    ASSERT_EQ(q_cpu.size(), q_gpu.size());
    for (size_t k = 0; k < q_cpu.size(); ++k) {
      const std::string mtag = tag + " " + q_cpu[k].name;
      ASSERT_EQ(q_cpu[k].quantized.has_value(), q_gpu[k].quantized.has_value()) << mtag;
      if (!q_cpu[k].quantized) continue;
      const QuantizedLinear &a = *q_gpu[k].quantized, &b = *q_cpu[k].quantized;
      const auto ca = cpu::unpack_codes(a.qweight, a.rows, a.cols, a.bits);
      const auto cb = cpu::unpack_codes(b.qweight, b.rows, b.cols, b.bits);
      size_t equal = 0;
      for (size_t i = 0; i < ca.size(); ++i) equal += ca[i] == cb[i];
      const double fraction = static_cast<double>(equal) / static_cast<double>(ca.size());
      std::printf("%s: codes equal %.6f, rel_error gpu %.6g cpu %.6g\n", mtag.c_str(), fraction, q_gpu[k].rel_error,
                  q_cpu[k].rel_error);
      // A GPTQ linear here has 2048-11008 weights: one tie rounded the other way early in a
      // row can move several later codes of it through the error feedback, so the 99.9 %
      // holds over all GPTQ codes of the model (below) and each linear keeps 99 %.
      EXPECT_GE(fraction, 0.99) << mtag;
      if (b.method == quant_method::gptq) {
        gptq_equal += equal;
        gptq_codes += ca.size();
      } else {  // no Hessian: exact
        EXPECT_EQ(a.qweight, b.qweight) << mtag;
        EXPECT_EQ(a.scales, b.scales) << mtag;
        EXPECT_EQ(a.zeros, b.zeros) << mtag;
        EXPECT_EQ(a.outlier_cols, b.outlier_cols) << mtag;
        EXPECT_EQ(a.outlier_weights, b.outlier_weights) << mtag;
      }
      EXPECT_NEAR(q_gpu[k].rel_error, q_cpu[k].rel_error, 1e-3 * q_cpu[k].rel_error + 1e-9) << mtag;
    }
    cpu_engine->propagate();
    gpu_engine->propagate();
    const auto h_cpu = cpu_engine->hidden(), h_gpu = gpu_engine->hidden();
    for (size_t i = 0; i < h_cpu.size(); ++i)
      EXPECT_TRUE(test::check_tensor(tag + " hidden mb " + std::to_string(i), h_gpu[i].data(), h_cpu[i].data(),
                                     h_cpu[i].size(), 2e-3f, 2e-3f));
    gpu_engine->set_hidden(h_cpu);  // the next layer starts from the same input on both
  }
  ASSERT_GT(gptq_codes, 0u);
  const double gptq_fraction = static_cast<double>(gptq_equal) / static_cast<double>(gptq_codes);
  std::printf("all GPTQ linears: codes equal %.6f of %zu\n", gptq_fraction, gptq_codes);
  EXPECT_GE(gptq_fraction, 0.999);
}

TEST(SequentialEngineCuda, RefusesMismatchedHiddenStates) {
  SHARDQ_REQUIRE_GPU();
  const test::Stories260K m = test::load_stories260k();
  ModelConfig c;
  test::stories_layer(m, 0, c);
  auto engine = make_sequential_engine("cuda", c, MicroBatches{{1, 1}, 8}, {});
  EXPECT_THROW(engine->set_hidden({std::vector<float>(8 * m.dim)}), error);                           // one block for two
  EXPECT_THROW(engine->set_hidden({std::vector<float>(8 * m.dim), std::vector<float>(7 * m.dim)}), error);  // short block
}

}  // namespace
}  // namespace shardq
