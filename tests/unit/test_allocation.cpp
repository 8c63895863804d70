// Base allocation: uniform, keep, components and overrides, with a hand-computed average.
#include <gtest/gtest.h>

#include "common/error.hpp"
#include "coordinator/allocation.hpp"
#include "support/test_support.hpp"

namespace shardq {
namespace {

ModelConfig stories_shape() { return test::stories260k_shape(); }

JobSpec spec_with(const nlohmann::json& precision) {
  return job_spec_from_json({{"model", "m"}, {"output", "o"}, {"precision", precision}});
}

TEST(Allocation, ModulesHaveHfNamesAndShapes) {
  const auto mods = layer_modules(stories_shape(), 3);
  ASSERT_EQ(mods.size(), 7u);
  EXPECT_EQ(mods[0].name, "model.layers.3.self_attn.q_proj");
  EXPECT_EQ(mods[1].rows, 32);
  EXPECT_EQ(mods[6].name, "model.layers.3.mlp.down_proj");
  EXPECT_EQ(mods[6].rows, 64);
  EXPECT_EQ(mods[6].cols, 172);
}

TEST(Allocation, MixedOverridesAverageIsExact) {
  // Layer 0 at 8 bits, every other down_proj kept in 16 bits, the rest 4: for layer 0's
  // down_proj the more specific pattern ("model.layers.0.*": 15 literal characters against
  // 14) wins. Per layer: attn 4096+2048+2048+4096, gate/up 11008 each, down 11008 parameters.
  const Allocation a = allocate_base(stories_shape(), spec_with({{"overrides", {{"model.layers.0.*", {{"bits", 8}}},
                                                                               {"*.mlp.down_proj", {{"bits", 16}}}}}}));
  const double expected = (45312.0 * 8 + 4 * (34304.0 * 4 + 11008.0 * 16)) / (5 * 45312.0);
  EXPECT_DOUBLE_EQ(a.avg_bits(), expected);
  EXPECT_EQ(a.find("model.layers.0.mlp.down_proj").bits(), 8);
  EXPECT_FALSE(a.find("model.layers.1.mlp.down_proj").quantized);
  EXPECT_EQ(a.find("model.layers.0.mlp.up_proj").bits(), 8);
  EXPECT_EQ(a.find("model.layers.4.self_attn.k_proj").bits(), 4);
}

TEST(Allocation, KeepAndComponents) {
  const Allocation keep = allocate_base(stories_shape(), spec_with({{"policy", "keep"}, {"keep_fp16_layers", "1-2"}}));
  EXPECT_FALSE(keep.find("model.layers.1.self_attn.q_proj").quantized);
  EXPECT_FALSE(keep.find("model.layers.2.mlp.down_proj").quantized);
  EXPECT_TRUE(keep.find("model.layers.3.mlp.down_proj").quantized);
  EXPECT_DOUBLE_EQ(keep.avg_bits(), (2 * 16.0 + 3 * 4.0) / 5.0);

  const Allocation attn = allocate_base(stories_shape(), spec_with({{"components", {"attn"}}}));
  EXPECT_TRUE(attn.find("model.layers.0.self_attn.o_proj").quantized);
  EXPECT_FALSE(attn.find("model.layers.0.mlp.gate_proj").quantized);

  EXPECT_THROW(allocate_base(stories_shape(), spec_with({{"policy", "keep"}, {"keep_fp16_layers", "4-5"}})), spec_error);
}

TEST(Allocation, MethodOverrideBringsItsGrid) {
  const Allocation a = allocate_base(stories_shape(), spec_with({{"overrides", {{"*.mlp.*", {{"method", "nf4"}}}}}}));
  const auto& m = a.find("model.layers.2.mlp.up_proj");
  EXPECT_EQ(m.quant.method, quant_method::nf4);
  EXPECT_EQ(m.quant.group_size, 64);
  const Allocation back = allocation_from_json(allocation_to_json(a), stories_shape());
  EXPECT_EQ(allocation_to_json(back), allocation_to_json(a));
}

}  // namespace
}  // namespace shardq
