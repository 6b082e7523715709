// Non-finite numbers in JSON (common/json_number.h): written as "nan" /
// "inf" / "-inf", never as a silent null, and read back (issue 17).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/error.h"
#include "common/json_number.h"

namespace moe {
namespace {

TEST(NonFiniteJson, DumpTagsEveryNonFiniteNumberAndReadsItBack) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  nlohmann::json j = {{"loss", nan}, {"steps", {{{"grad_norm", inf}}, {{"grad_norm", -inf}}}}, {"ok", 1.5}, {"n", 3}};
  EXPECT_EQ(j.dump().find("null") != std::string::npos, true);  // what nlohmann alone writes
  const std::string text = dumpJson(j);
  EXPECT_EQ(text.find("null"), std::string::npos) << text;
  const auto back = nlohmann::json::parse(text);
  EXPECT_EQ(back["loss"], "nan");
  EXPECT_TRUE(std::isnan(numberOf(back["loss"], "loss")));
  EXPECT_EQ(numberOf(back["steps"][0]["grad_norm"], "g"), inf);
  EXPECT_EQ(numberOf(back["steps"][1]["grad_norm"], "g"), -inf);
  EXPECT_EQ(numberOf(back["ok"], "ok"), 1.5);
  EXPECT_EQ(numberOr(back, "missing", 7.0), 7.0);
  EXPECT_THROW(numberOf(nlohmann::json(nullptr), "loss"), HarnessError);
  EXPECT_THROW(numberOf(nlohmann::json("abc"), "loss"), HarnessError);
  EXPECT_EQ(jsonNumber(2.0), nlohmann::json(2.0));
  EXPECT_EQ(jsonNumber(-inf), nlohmann::json("-inf"));
}

}  // namespace
}  // namespace moe
