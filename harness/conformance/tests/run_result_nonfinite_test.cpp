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

TEST(RunTimingsPhases, RoundTripAndAnUnknownSpawnIsLeftOutNotNull) {
  RunResult r;
  r.timings.rendezvousSeconds = 0.5;
  r.timings.loadSeconds = 1.25;
  r.timings.referenceSeconds = 2.0;
  r.timings.stepSeconds = {0.25, 0.75};
  r.timings.checksSeconds = 0.125;
  const nlohmann::json j = r.toJson();
  const auto& phases = j["timings"]["phases"];
  EXPECT_FALSE(phases.contains("spawn")) << phases.dump();  // spawnSeconds < 0: unknown
  EXPECT_EQ(phases["steps"].get<double>(), 1.0);          // the sum of the steps
  EXPECT_EQ(phases["load"].get<double>(), 1.25);
  EXPECT_EQ(phases["reference"].get<double>(), 2.0);
  RunResult back = RunResult::fromJson(j);
  EXPECT_EQ(back.timings.spawnSeconds, -1.0);
  EXPECT_EQ(back.timings.rendezvousSeconds, 0.5);
  EXPECT_EQ(back.timings.checksSeconds, 0.125);
  r.timings.spawnSeconds = 0.375;
  EXPECT_EQ(RunResult::fromJson(r.toJson()).timings.spawnSeconds, 0.375);
  // A phase of the wrong type is named.
  nlohmann::json bad = j;
  bad["timings"]["phases"]["load"] = "slow";
  try {
    RunResult::fromJson(bad);
    ADD_FAILURE() << "no error";
  } catch (const HarnessError& e) {
    EXPECT_NE(std::string(e.what()).find("timings.phases \"load\""), std::string::npos) << e.what();
  }
}

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
