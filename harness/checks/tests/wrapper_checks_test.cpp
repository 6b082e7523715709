// Pure parts of the wrapper checks (wrapper_checks.h), each on correct input
// and on a planted wrong one. No ranks.
#include <gtest/gtest.h>

#include "common/tests/text_assert.h"

#include "harness/checks/wrapper_checks.h"

namespace moe::checks {
namespace {

using testutil::has;

TEST(WrapperChecks, ParamsChangedNamesTheUnchangedOnes) {
  EXPECT_TRUE(describeParamsChanged({"a", "b"}, {true, true}).passed);
  auto r = describeParamsChanged({"a", "model.norm.weight", "c"}, {true, false, true});
  EXPECT_FALSE(r.passed);
  EXPECT_TRUE(has(r.explanation, "1 of 3 trainable parameters unchanged"));
  EXPECT_TRUE(has(r.explanation, "model.norm.weight"));
  EXPECT_EQ(r.measured["unchanged"].size(), 1u);
}

comm::OpCounter counter(int64_t calls, int64_t bytes) {
  comm::OpCounter c;
  c.calls = calls;
  c.bytesSent = c.bytesRecv = bytes;
  return c;
}

TEST(WrapperChecks, CommOnlyTheWrapperGroupsAndExactBytes) {
  CommCounters step;
  step[{"fsdp:dp", comm::OpType::kAllGather}] = counter(3, 300);
  step[{"fsdp:dp", comm::OpType::kReduceScatter}] = counter(3, 600);
  step[{"dp", comm::OpType::kAllReduce}] = counter(5, 40);  // the model's, not the wrapper's
  auto mine = countersWithPrefix(step, "fsdp:");
  ASSERT_EQ(mine.size(), 2u);
  std::vector<CommExpectation> want = {{"fsdp:dp", comm::OpType::kAllGather, 3, 300, std::nullopt},
                                       {"fsdp:dp", comm::OpType::kReduceScatter, 3, 600, std::nullopt}};
  auto ok = checkWrapperComm(0, mine, want);
  EXPECT_TRUE(ok.passed) << ok.explanation;
  EXPECT_DOUBLE_EQ(ok.measured["ratio"].get<double>(), 1.0);

  // A second gather per parameter (e.g. resharding after forward): caught.
  auto extra = mine;
  extra[{"fsdp:dp", comm::OpType::kAllGather}] = counter(4, 400);
  auto r = checkWrapperComm(1, extra, want);
  EXPECT_FALSE(r.passed);
  EXPECT_TRUE(has(r.explanation, "rank 1: extra collective: 4 all_gather calls on group fsdp:dp, expected 3"));
  EXPECT_NEAR(r.measured["ratio"].get<double>(), 1000.0 / 900.0, 1e-12);

  // The same calls with unpadded bytes: caught by the byte count.
  auto bytes = mine;
  bytes[{"fsdp:dp", comm::OpType::kReduceScatter}] = counter(3, 500);
  EXPECT_FALSE(checkWrapperComm(0, bytes, want).passed);

  // Traffic on a wrapper group nobody expects.
  auto other = mine;
  other[{"fsdp:tp", comm::OpType::kAllReduce}] = counter(1, 8);
  auto o = checkWrapperComm(0, other, want);
  EXPECT_FALSE(o.passed);
  EXPECT_TRUE(has(o.explanation, "fsdp:tp, expected none"));
}

TEST(WrapperChecks, GatherVolumeIsExactIncludingPadding) {
  // [6, 4] over n = 2 (pieces 3, 3): (n-1)/n x 24 elements x 4 B = 48.
  const auto even = expectedGatherVolume({{6, 4, 2, 3}}, 4);
  EXPECT_TRUE(even.even);
  EXPECT_DOUBLE_EQ(even.unpaddedBytes, 48);
  EXPECT_DOUBLE_EQ(even.paddedBytes, 48);
  EXPECT_EQ(gatherVolumeFailure(0, 48, even), "");
  // Gathered twice per step (resharded after forward, re-gathered backward).
  auto twice = gatherVolumeFailure(2, 96, even);
  EXPECT_TRUE(has(twice, "rank 2: all_gather sent 96 bytes"));
  EXPECT_TRUE(has(twice, ": 2)"));
  // A parameter left out of the gather.
  EXPECT_NE(gatherVolumeFailure(0, 40, even), "");
  // [5, 2] over n = 3 (pieces 2, 2, 1): every piece padded to 2 rows, so a
  // rank sends 2 x 2 rows x 2 elements x 4 B = 32 (unpadded 26.67).
  const auto uneven = expectedGatherVolume({{5, 2, 3, 2}}, 4);
  EXPECT_FALSE(uneven.even);
  EXPECT_DOUBLE_EQ(uneven.paddedBytes, 32);
  EXPECT_EQ(gatherVolumeFailure(0, 32, uneven), "");
  EXPECT_TRUE(has(gatherVolumeFailure(1, 30, uneven), "padded to the largest piece = 32"));
  EXPECT_NE(gatherVolumeFailure(1, 34, uneven), "");  // more than the padding explains
  // An empty plan-local tensor still moves one padded row per rank.
  EXPECT_DOUBLE_EQ(expectedGatherVolume({{0, 3, 2, 0}}, 4).paddedBytes, 12);
}

TEST(WrapperChecks, GatherVolumeUsesTheGatherDtype) {
  // [6, 4] over n = 2 and [5, 2] over n = 3 (padded), plus one parameter not
  // gathered (n = 1).
  const std::vector<GatheredParam> params = {{6, 4, 2, 3}, {5, 2, 3, 2}, {10, 10, 1, 10}};
  const auto fp32 = expectedGatherVolume(params, 4);
  EXPECT_DOUBLE_EQ(fp32.paddedBytes, 48 + 32);
  const auto bf16 = expectedGatherVolume(params, 2);  // bf16 parameters: half the bytes
  EXPECT_DOUBLE_EQ(bf16.paddedBytes, 40);
  EXPECT_EQ(gatherVolumeFailure(0, 40, bf16), "");
  // bf16 parameters gathered in fp32 (twice the bytes), even with padding.
  EXPECT_TRUE(has(gatherVolumeFailure(3, 80, bf16), "rank 3: all_gather sent 80 bytes"));
  // And an fp32 expectation while the store gathers bf16.
  EXPECT_NE(gatherVolumeFailure(0, 40, fp32), "");
}

TEST(WrapperChecks, MemoryFactorAndConsistency) {
  // fsdp over 4 ranks, 100 fp32 elements per rank plan-local: 25 each.
  MemoryInputs m{100, 100, 200, 1600, 100};
  std::vector<MemoryInputs> ranks(4, m);
  MemoryCheckOptions o;
  o.expectedFactor = 0.25;
  auto r = checkMemoryOf(ranks, o);
  EXPECT_TRUE(r.passed) << r.explanation;
  EXPECT_DOUBLE_EQ(r.measured["ratio"].get<double>(), 0.25);

  // A wrapper that keeps a full copy on one rank: the factor is off.
  ranks[2] = {400, 400, 800, 1600, 400};
  auto full = checkMemoryOf(ranks, o);
  EXPECT_FALSE(full.passed);
  EXPECT_TRUE(has(full.explanation, "expected 0.25"));

  // Parameter bytes the placements do not describe (a hidden replica).
  std::vector<MemoryInputs> hidden(4, m);
  hidden[1].placementParamBytes = 50;
  auto h = checkMemoryOf(hidden);
  EXPECT_FALSE(h.passed);
  EXPECT_TRUE(has(h.explanation, "rank 1: the wrapper holds 100 parameter bytes, its placements describe 50"));

  // Declared padding (a flat partition) accounts for the difference.
  hidden[1].paddingBytes = 50;
  EXPECT_TRUE(checkMemoryOf(hidden).passed);

  // Optimizer state not sharded like the parameters.
  std::vector<MemoryInputs> opt(4, m);
  opt[3].optimizerBytes = 800;
  EXPECT_FALSE(checkMemoryOf(opt).passed);
}

TEST(WrapperChecks, GradScaleAssertsTheRatio) {
  GradScaleOptions o;
  o.tol = 1e-5;
  std::vector<GradNorm> ok = {{"e.gate_up_proj", 2.0 * (1 + 5e-6), 2.0}, {"e.down_proj", 0, 0}};
  EXPECT_TRUE(describeGradScale(ok, o).passed);
  // A planted x2 (experts averaged over the wrong group the other way, or
  // summed twice) fails, and so does the ep x too-small case.
  std::vector<GradNorm> x2 = {{"e.gate_up_proj", 4.0, 2.0}};
  auto r = describeGradScale(x2, o);
  EXPECT_FALSE(r.passed);
  EXPECT_TRUE(has(r.explanation, "e.gate_up_proj: gradient norm 4 vs reference 2 (ratio 2"));
  EXPECT_FALSE(describeGradScale({{"e.down_proj", 0.5, 1.0}}, o).passed);
  // A gradient where the reference has none.
  EXPECT_FALSE(describeGradScale({{"e.down_proj", 1e-3, 0.0}}, o).passed);
}

}  // namespace
}  // namespace moe::checks
