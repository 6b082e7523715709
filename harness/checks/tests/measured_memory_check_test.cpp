// The measured_memory check (measured_memory_check.h) on correct input and on
// planted wrong ones. No ranks: the inputs are what four ranks would gather.
#include <gtest/gtest.h>

#include "common/tests/text_assert.h"

#include "harness/checks/measured_memory_check.h"

namespace moe::checks {
namespace {

using testutil::has;

// A wrapper that shards 1000 replicated bytes per rank over 4 ranks: it
// declares 250, holds 260 after each step (10 bytes it does not declare),
// peaks at 700 during a step.
MeasuredMemory rank(int64_t afterLast = 260) {
  MeasuredMemory m;
  m.atStep1 = 70;
  m.stepPeaks = {700, 690};
  m.afterLast = afterLast;
  m.declaredBytes = 250;
  m.replicatedBytes = 1000;
  m.allowanceBytes = 16;
  return m;
}

TEST(MeasuredMemoryCheck, ReportsMeasuredAndDeclaredRatiosAgainstTheReplicatedLayout) {
  std::vector<MeasuredMemory> ranks(4, rank());
  auto r = checkMeasuredMemoryOf(ranks);
  EXPECT_TRUE(r.passed) << r.explanation;
  EXPECT_EQ(r.check, "measured_memory");
  // 4 x 260 / 4 x 1000, 4 x 250 / 4 x 1000, peak 4 x 700 / 4 x 1000.
  EXPECT_DOUBLE_EQ(r.measured["measured_ratio"].get<double>(), 0.26);
  EXPECT_DOUBLE_EQ(r.measured["declared_ratio"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(r.measured["peak_ratio"].get<double>(), 0.7);
  EXPECT_TRUE(has(r.explanation, "replicated declaration 0.26 (declared 0.25)"));
  EXPECT_TRUE(has(r.explanation, "within its declaration + allowance"));
  ASSERT_EQ(r.measured["per_rank"].size(), 4u);
  EXPECT_EQ(r.measured["per_rank"][2]["peak_bytes"].get<int64_t>(), 700);
  EXPECT_EQ(r.measured["per_rank"][2]["after_last_step_bytes"].get<int64_t>(), 260);
  EXPECT_EQ(r.measured["unaccounted_bytes"][0].get<int64_t>(), 10);
}

TEST(MeasuredMemoryCheck, FewerBytesThanDeclaredFail) {
  // A tracker that misses the wrapper's allocations (or a declaration that
  // overstates them) on rank 3.
  std::vector<MeasuredMemory> ranks(4, rank());
  ranks[3].afterLast = 200;
  auto r = checkMeasuredMemoryOf(ranks);
  EXPECT_FALSE(r.passed);
  EXPECT_TRUE(has(r.explanation, "rank 3: 200 bytes of tensor storage live after the last step, fewer than the 250"));
}

TEST(MeasuredMemoryCheck, APeakBelowTheStateAfterTheStepFails) {
  std::vector<MeasuredMemory> ranks(4, rank());
  ranks[1].stepPeaks = {700, 259};
  auto r = checkMeasuredMemoryOf(ranks);
  EXPECT_FALSE(r.passed);
  EXPECT_TRUE(has(r.explanation, "rank 1: 260 bytes live after the last step exceed that step's peak 259"));
}

TEST(MeasuredMemoryCheck, UndeclaredBytesFailOnlyWhenAsserted) {
  // Rank 2 keeps a full replicated gradient it does not declare.
  std::vector<MeasuredMemory> ranks(4, rank());
  ranks[2].afterLast = 250 + 250;
  ranks[2].stepPeaks.back() = 800;
  auto reported = checkMeasuredMemoryOf(ranks);
  EXPECT_TRUE(reported.passed) << reported.explanation;
  EXPECT_TRUE(has(reported.explanation, "rank 2 holds 500 bytes after the last step, 250 more than the 250 declared "
                                        "(allowance 16) (not asserted)"));
  MeasuredMemoryOptions o;
  o.assertAccounted = true;
  auto asserted = checkMeasuredMemoryOf(ranks, o);
  EXPECT_FALSE(asserted.passed);
  EXPECT_TRUE(has(asserted.explanation, "rank 2 holds 500 bytes after the last step, 250 more than the 250 declared"));
  // Within the allowance: passes even when asserted.
  std::vector<MeasuredMemory> within(4, rank(250 + 16));
  EXPECT_TRUE(checkMeasuredMemoryOf(within, o).passed);
  std::vector<MeasuredMemory> over(4, rank(250 + 17));
  EXPECT_FALSE(checkMeasuredMemoryOf(over, o).passed);
}

}  // namespace
}  // namespace moe::checks
