// Job spec parsing: defaults, every validation names its field, globs and layer ranges.
#include <gtest/gtest.h>

#include <fstream>

#include "common/error.hpp"
#include "common/job_spec.hpp"
#include "support/test_support.hpp"

namespace shardq {
namespace {

using nlohmann::json;

json minimal() { return {{"model", "m"}, {"output", "o"}}; }

std::string field_of(const json& j) {
  try {
    job_spec_from_json(j);
  } catch (const spec_error& e) {
    return e.field();
  }
  return "<accepted>";
}

TEST(JobSpec, DefaultsFollowTheDesign) {
  const JobSpec s = job_spec_from_json(minimal());
  EXPECT_EQ(s.quant.method, quant_method::gptq);
  EXPECT_EQ(s.quant.bits, 4);
  EXPECT_EQ(s.quant.group_size, 128);
  EXPECT_FALSE(s.quant.sym);
  EXPECT_TRUE(s.quant.act_order);
  EXPECT_FLOAT_EQ(s.quant.damp, 0.01f);
  EXPECT_EQ(s.quant.block_size, 128);
  EXPECT_EQ(s.calibration.samples, 128);
  EXPECT_EQ(s.calibration.seq_len, 2048);
  EXPECT_EQ(s.calibration.seed, 0u);
  EXPECT_EQ(s.precision.policy, "uniform");
  EXPECT_EQ(s.schedule, "sequential");
  EXPECT_EQ(s.comm, "auto");
  EXPECT_EQ(s.device, "auto");
  EXPECT_FALSE(s.resume);
}

TEST(JobSpec, FullExampleOfTheDesignParsesAndRoundTrips) {
  const json j = json::parse(R"({
    "model": "models/llama-7b", "output": "out/llama-7b-3.5bpw",
    "calibration": {"path": "calib.txt", "format": "text", "samples": 128, "seq_len": 2048, "seed": 0},
    "quant": {"method": "gptq", "bits": 4, "group_size": 128, "sym": false, "act_order": true, "damp": 0.01, "block_size": 128},
    "precision": {"policy": "sensitivity", "target_bpw": 3.5, "bit_options": [2, 3, 4, 8],
                  "keep_fp16_layers": "16-31", "components": ["attn", "mlp"],
                  "overrides": {"model.layers.0.*": {"bits": 8}}},
    "schedule": "pipeline", "comm": "auto", "device": "auto", "resume": true})");
  const JobSpec s = job_spec_from_json(j);
  EXPECT_EQ(s.precision.keep_fp16_layer_list.size(), 16u);
  EXPECT_EQ(s.precision.keep_fp16_layer_list.front(), 16);
  ASSERT_EQ(s.precision.overrides.size(), 1u);
  EXPECT_EQ(*s.precision.overrides[0].bits, 8);
  EXPECT_DOUBLE_EQ(*s.precision.target_bpw, 3.5);
  // The filled-in spec parses to the same thing again.
  const JobSpec again = job_spec_from_json(job_spec_to_json(s));
  EXPECT_EQ(job_spec_to_json(again), job_spec_to_json(s));
}

TEST(JobSpec, ErrorsNameTheField) {
  auto with = [](const std::string& path, json value) {
    json j = minimal();
    j[json::json_pointer(path)] = value;
    return j;
  };
  EXPECT_EQ(field_of(json{{"output", "o"}}), "model");
  EXPECT_EQ(field_of(with("/bogus", 1)), "bogus");
  EXPECT_EQ(field_of(with("/quant/bitz", 4)), "quant.bitz");
  EXPECT_EQ(field_of(with("/quant/bits", 5)), "quant.bits");
  EXPECT_EQ(field_of(with("/quant/bits", "4")), "quant.bits");
  EXPECT_EQ(field_of(with("/quant/group_size", 0)), "quant.group_size");
  EXPECT_EQ(field_of(with("/quant/damp", -0.1)), "quant.damp");
  EXPECT_EQ(field_of(with("/quant/method", "awq")), "quant.method");
  EXPECT_EQ(field_of(with("/calibration/samples", 0)), "calibration.samples");
  EXPECT_EQ(field_of(with("/calibration/format", "csv")), "calibration.format");
  EXPECT_EQ(field_of(with("/schedule", "fast")), "schedule");
  EXPECT_EQ(field_of(with("/precision/policy", "lim")), "precision.target_bpw");
  EXPECT_EQ(field_of(with("/precision/bit_options", json::array({2, 5}))), "precision.bit_options[1]");
  EXPECT_EQ(field_of(with("/precision/keep_fp16_layers", "3-1")), "precision.keep_fp16_layers");
  EXPECT_EQ(field_of(with("/precision/components", json::array({"attn", "ffn"}))), "precision.components[1]");
  EXPECT_EQ(field_of(with("/precision/overrides", json{{"model.*", {{"bits", 5}}}})), "precision.overrides.model.*.bits");
  EXPECT_EQ(field_of(with("/precision/overrides", json{{"model.*", {{"bitz", 4}}}})), "precision.overrides.model.*.bitz");
  EXPECT_EQ(field_of(json::array()), "spec");
  // Integers beyond the field's type are refused, not wrapped (4294967300 would be bits 4).
  EXPECT_EQ(field_of(with("/quant/bits", 4294967300ULL)), "quant.bits");
  EXPECT_EQ(field_of(with("/quant/group_size", 4294967295ULL)), "quant.group_size");
  EXPECT_EQ(field_of(with("/calibration/samples", 4294967312ULL)), "calibration.samples");
  EXPECT_EQ(field_of(with("/calibration/seq_len", -4294967296LL)), "calibration.seq_len");
  // nf4 and int8 have their own widths.
  json nf4 = with("/quant/method", "nf4");
  EXPECT_EQ(field_of(nf4), "<accepted>");
  EXPECT_EQ(job_spec_from_json(nf4).quant.group_size, 64);
  nf4["quant"]["bits"] = 3;
  EXPECT_EQ(field_of(nf4), "quant.bits");
}

TEST(JobSpec, ErrorMessagesShowScalarsAndNameStructures) {
  auto message = [](const json& j) {
    try {
      job_spec_from_json(j);
    } catch (const spec_error& e) {
      return std::string(e.what());
    }
    return std::string("<accepted>");
  };
  json j = minimal();
  j["model"] = json::array({json::array({1, 2})});
  EXPECT_NE(message(j).find("must be a string, got an array"), std::string::npos) << message(j);
  j["model"] = 7;
  EXPECT_NE(message(j).find("got 7"), std::string::npos) << message(j);
  j = minimal();
  j["quant"] = {{"sym", std::string(10000, 'x')}};
  EXPECT_LT(message(j).size(), 200u) << message(j);
}

TEST(JobSpec, LayerRangesAndGlobs) {
  EXPECT_EQ(parse_layer_ranges("0-3,40-41,7", "f"), (std::vector<int>{0, 1, 2, 3, 7, 40, 41}));
  EXPECT_THROW(parse_layer_ranges("0-", "f"), spec_error);
  EXPECT_THROW(parse_layer_ranges("a", "f"), spec_error);
  EXPECT_THROW(parse_layer_ranges("0-40", "f", 32), spec_error);
  EXPECT_TRUE(glob_match("model.layers.0.*", "model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(glob_match("model.layers.0.*", "model.layers.10.self_attn.q_proj"));
  EXPECT_TRUE(glob_match("*.mlp.*_proj", "model.layers.3.mlp.down_proj"));
  EXPECT_TRUE(glob_match("model.layers.?.mlp.up_proj", "model.layers.7.mlp.up_proj"));
  EXPECT_FALSE(glob_match("model.layers.?.mlp.up_proj", "model.layers.17.mlp.up_proj"));
  EXPECT_TRUE(glob_match("*", ""));
}

TEST(JobSpec, PathChecksRefuseBeforeWork) {
  test::TempDir dir;
  const auto model = dir / "model";
  std::filesystem::create_directories(model);
  std::ofstream(model / "config.json") << "{}";
  JobSpec s = job_spec_from_json(minimal());
  s.model = model.string();
  s.output = (dir / "out").string();
  EXPECT_NO_THROW(job_spec_check_paths(s, false));

  auto field = [&](const JobSpec& spec, bool force) {
    try {
      job_spec_check_paths(spec, force);
    } catch (const spec_error& e) {
      return e.field();
    }
    return std::string("<accepted>");
  };
  JobSpec inside = s;
  inside.output = (model / "q").string();
  EXPECT_EQ(field(inside, true), "output");
  JobSpec same = s;
  same.output = model.string();
  EXPECT_EQ(field(same, true), "output");
  JobSpec calib = s;
  calib.calibration.path = (dir / "missing.txt").string();
  EXPECT_EQ(field(calib, false), "calibration.path");
  JobSpec no_model = s;
  no_model.model = (dir / "nope").string();
  EXPECT_EQ(field(no_model, false), "model");
  std::filesystem::create_directories(dir / "out");
  std::ofstream(dir / "out" / "keep.txt") << "user data";
  EXPECT_EQ(field(s, false), "output");
  EXPECT_EQ(field(s, true), "<accepted>");
}

}  // namespace
}  // namespace shardq
