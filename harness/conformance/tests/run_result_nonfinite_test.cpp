// A run result holding NaN / Inf (a diverged run) is written and read back
// without a JSON type error (issue 17: run-plan crashed with "type must be
// number, but is null").
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/error.h"
#include "common/json_number.h"
#include "harness/conformance/run_result.h"

namespace moe::conformance {
namespace {

TEST(NonFiniteRunResult, RoundTripsThroughTheDocumentedStrings) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  RunResult r;
  StepComparison s;
  s.run = {1, nan, nan, 0.1, inf};
  s.reference = {1, 2.5, 2.4, 0.1, 3.0};
  r.steps.push_back(s);
  r.checks.push_back({"finite", false, "rank 0: step 1: loss is nan", {{"max", nan}}});
  const std::string text = dumpJson(r.toJson(), 1);
  // "mutant": null (no mutant, documented) is the only null.
  EXPECT_EQ(text.find("null"), text.rfind("null")) << text;
  EXPECT_NE(text.find("\"mutant\": null"), std::string::npos) << text;
  EXPECT_NE(text.find("\"loss\": \"nan\""), std::string::npos) << text;
  const RunResult back = RunResult::fromJson(nlohmann::json::parse(text));
  ASSERT_EQ(back.steps.size(), 1u);
  EXPECT_TRUE(std::isnan(back.steps[0].run.loss));
  EXPECT_EQ(back.steps[0].run.gradNorm, inf);
  EXPECT_EQ(back.steps[0].reference.loss, 2.5);
  EXPECT_EQ(back.checks.at(0).measured["max"], "nan");
  // A null number (what a plain dump() writes) is a user error naming the field.
  auto j = r.toJson();
  j["steps"][0]["loss"] = nullptr;
  EXPECT_THROW(RunResult::fromJson(j), HarnessError);
}

}  // namespace
}  // namespace moe::conformance
