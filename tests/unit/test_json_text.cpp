// JSON from outside the process: the depth limit and the values shown in messages.
#include <gtest/gtest.h>

#include <string>

#include "common/json_text.hpp"

namespace shardq {
namespace {

using nlohmann::json;

std::string nested(int depth, const std::string& inner = "1") {
  return std::string(static_cast<size_t>(depth), '[') + inner + std::string(static_cast<size_t>(depth), ']');
}

TEST(JsonText, ParsesDocumentsUpToTheDepthLimit) {
  std::string why;
  const json j = parse_json_text(R"({"a": [1, {"b": "c"}], "d": null})", why);
  ASSERT_FALSE(j.is_discarded()) << why;
  EXPECT_EQ(j.at("a").at(1).at("b"), "c");
  EXPECT_TRUE(why.empty());
  // max_json_depth levels of arrays still parse; one more does not.
  const json deepest = parse_json_text(nested(max_json_depth), why);
  ASSERT_FALSE(deepest.is_discarded()) << why;
  const json* v = &deepest;
  for (int i = 0; i < max_json_depth; ++i) v = &v->at(0);
  EXPECT_EQ(*v, 1);
  EXPECT_TRUE(parse_json_text(nested(max_json_depth + 1), why).is_discarded());
  EXPECT_EQ(why, "nested deeper than 64 levels");
}

TEST(JsonText, HostileNestingIsRefusedWithoutBuildingIt) {
  // Deep enough that dump() or a copy of the built value would overflow the stack.
  std::string why;
  EXPECT_TRUE(parse_json_text(R"({"model": )" + nested(200000) + "}", why).is_discarded());
  EXPECT_EQ(why, "nested deeper than 64 levels");
  std::string objects;
  for (int i = 0; i < 200000; ++i) objects += R"({"k":)";
  objects += '0';
  objects.append(200000, '}');
  EXPECT_TRUE(parse_json_text(objects, why).is_discarded());
}

TEST(JsonText, SyntaxErrorsSayWhere) {
  std::string why;
  EXPECT_TRUE(parse_json_text(R"({"a": 1,})", why).is_discarded());
  EXPECT_EQ(why.rfind("parse error at line 1, column 9", 0), 0u) << why;
  EXPECT_TRUE(parse_json_text("", why).is_discarded());
  EXPECT_FALSE(why.empty());
  EXPECT_TRUE(parse_json_text(nested(3) + "]", why).is_discarded());  // unbalanced
  EXPECT_TRUE(parse_json_text(R"({"x": 18e4934881})", why).is_discarded());  // found by fuzz.safetensors_header
  EXPECT_NE(why.find("number overflow"), std::string::npos) << why;
}

// '"' + body + tail, built by append (GCC 12's -Wrestrict misfires on "..." + std::string).
std::string quoted(const std::string& body, const char* tail) {
  std::string s(1, '"');
  s.append(body);
  s.append(tail);
  return s;
}

TEST(JsonText, ShownValuesAreBounded) {
  EXPECT_EQ(json_shown(json(5)), "5");
  EXPECT_EQ(json_shown(json("bits")), "\"bits\"");
  EXPECT_EQ(json_shown(json::array({1, 2})), "an array");
  EXPECT_EQ(json_shown(json::object({{"a", 1}})), "an object");
  EXPECT_EQ(json_shown(json(nullptr)), "null");
  const std::string shown = json_shown(json(std::string(1000, 'x')));
  EXPECT_EQ(shown, quoted(std::string(64, 'x'), "\"..."));
  // A cut through a multi-byte character still gives valid text.
  const std::string cut = json_shown(json(std::string(63, 'x') + "\xc3\xa9" + std::string(10, 'y')));
  EXPECT_EQ(cut, quoted(std::string(63, 'x'), "\xef\xbf\xbd\"..."));
}

}  // namespace
}  // namespace shardq
