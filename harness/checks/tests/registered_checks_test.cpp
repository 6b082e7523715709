// The checks that used to live in run-plan and the suite runner, now
// registered checks: the dispatch volume (part of communication), the FSDP
// gather volume and the expected placements. Each passes on correct input
// and fails on a planted wrong one, through its pure parts. No ranks.
#include <gtest/gtest.h>

#include "harness/checks/dispatch_volume.h"
#include "harness/checks/expected_placements_check.h"
#include "harness/checks/gather_volume_check.h"

namespace moe::checks {
namespace {

using ref::Placement;

ParamShard shard(const std::string& name, std::vector<int64_t> global, std::vector<Placement> placements,
                 std::vector<int64_t> local) {
  ParamShard s;
  s.name = name;
  s.globalShape = std::move(global);
  s.placements = std::move(placements);
  s.local = at::zeros(local);
  return s;
}

// ---- dispatch volume ---------------------------------------------------------
TEST(DispatchVolume, TokensTimesTopKTimesMoeLayers) {
  ref::ModelConfig cfg;
  cfg.numHiddenLayers = 3;
  cfg.numExperts = 4;
  cfg.numExpertsPerTok = 2;
  plan::AppliedPlan plan;
  plan.moduleComm["model.layers.0.mlp.gate"]["ep"] = plan::ModuleComm::with(&plan::ModuleComm::dispatchTokens);
  const mesh::MeshShape ep2({{"ep", 2}}, 2), tp2ep2({{"tp", 2}, {"ep", 2}}, 4);
  // 64 tokens x top-2 x 3 MoE layers.
  auto e = expectedDispatch(plan, ep2, cfg, 64);
  EXPECT_EQ(e.rows, 384);
  EXPECT_EQ(expectedDispatch(plan, tp2ep2, cfg, 64).rows, 768);  // both tp ranks dispatch the same tokens
  auto r = describeDispatchVolume(384, e);
  EXPECT_TRUE(r.passed) << r.explanation;
  EXPECT_EQ(r.check, "communication");
  EXPECT_EQ(r.explanation, "dispatch volume 384 rows = tokens x top-k x MoE layers");
  EXPECT_EQ(r.measured, (nlohmann::json{{"dispatched_rows", 384}, {"expected_rows", 384}}));
  // A dispatch that drops routed rows, and one that sends some twice.
  r = describeDispatchVolume(256, e);
  EXPECT_FALSE(r.passed);
  EXPECT_EQ(r.explanation,
            "dispatch volume 256 rows, expected 384 (tokens x top-k x MoE layers): 128 routed rows were never "
            "dispatched");
  r = describeDispatchVolume(768, expectedDispatch(plan, tp2ep2, cfg, 64));
  EXPECT_TRUE(r.passed);
  r = describeDispatchVolume(800, expectedDispatch(plan, tp2ep2, cfg, 64));
  EXPECT_EQ(r.explanation,
            "dispatch volume 800 rows, expected 768 (tokens x top-k x MoE layers x tp): 32 rows more than were routed");
  // No ep dispatch in the plan (or ep of one rank): nothing may be dispatched.
  EXPECT_EQ(expectedDispatch(plan::AppliedPlan{}, ep2, cfg, 64).rows, 0);
  EXPECT_EQ(expectedDispatch(plan, mesh::MeshShape({{"dp", 2}}, 2), cfg, 64).rows, 0);
  EXPECT_FALSE(describeDispatchVolume(8, expectedDispatch(plan::AppliedPlan{}, ep2, cfg, 64)).passed);
}

// ---- FSDP gather volume --------------------------------------------------------
TEST(GatherVolume, FromThePlanAndThePlacements) {
  // w [6, 4] replicated by the plan on dp=2, sharded Shard(0) by the wrapper:
  // rank 0 gathers 3 rows of 4 elements from its peer: (n-1)/n x 24 x 4 B = 48.
  plan::AppliedPlan plan;
  plan.params.push_back({"w", {6, 4}, {Placement::replicate()}, "", {""}, false});
  plan.params.push_back({"b", {4}, {Placement::replicate()}, "", {""}, false});
  const std::vector<ParamShard> shards = {shard("w", {6, 4}, {Placement::shard(0)}, {3, 4}),
                                          shard("b", {4}, {Placement::replicate()}, {4})};  // not gathered
  const auto gathered = gatheredParams(plan, shards, {2}, {0});
  ASSERT_EQ(gathered.size(), 2u);
  EXPECT_EQ(gathered[0].groupSize, 2);
  EXPECT_EQ(gathered[0].maxPieceRows, 3);
  EXPECT_EQ(gathered[1].groupSize, 1);
  const auto volume = expectedGatherVolume(gathered, 4);
  EXPECT_DOUBLE_EQ(volume.unpaddedBytes, 48);
  CommCounters counters;
  counters[{"fsdp:dp", comm::OpType::kAllGather}].bytesSent = 48;
  counters[{"fsdp:dp", comm::OpType::kReduceScatter}].bytesSent = 48;  // not a gather
  counters[{"dp", comm::OpType::kAllGather}].bytesSent = 1000;         // not the wrapper's group
  EXPECT_DOUBLE_EQ(gatherBytesSent(counters, "fsdp:"), 48);
  EXPECT_EQ(gatherVolumeFailure(0, gatherBytesSent(counters, "fsdp:"), volume), "");
  // The planted wrong input: the gather ran twice (re-gathered for backward).
  counters[{"fsdp:dp", comm::OpType::kAllGather}].bytesSent = 96;
  const std::string failure = gatherVolumeFailure(0, gatherBytesSent(counters, "fsdp:"), volume);
  EXPECT_NE(failure.find("rank 0: all_gather sent 96 bytes"), std::string::npos) << failure;
  // bf16 parameters gather half the bytes.
  EXPECT_DOUBLE_EQ(expectedGatherVolume(gathered, 2).unpaddedBytes, 24);
}

// ---- expected placements --------------------------------------------------------
TEST(ExpectedPlacements, FirstFailureInTheCasesOrder) {
  const std::string p = "model.layers.1.mlp.experts.gate_up_proj";
  // ep=2 over 8 experts: each rank holds [4, 32, 32], Shard(0).
  const std::vector<ParamShard> rank0 = {shard(p, {8, 32, 32}, {Placement::shard(0)}, {4, 32, 32})};
  const std::vector<ParamShard> rank1 = rank0;
  auto verdict = [&](const std::vector<PlacementExpectation>& e) {
    return describeExpectedPlacements(e, {expectedPlacementFailures(0, rank0, e), expectedPlacementFailures(1, rank1, e)});
  };
  auto r = verdict({{p, {1}, "[Shard(0)]", std::vector<int64_t>{4, 32, 32}}, {p, {}, "[Shard(-3)]", std::nullopt}});
  EXPECT_TRUE(r.passed) << r.explanation;
  EXPECT_EQ(r.check, "expected_placements");
  EXPECT_EQ(r.explanation, "3 (parameter, rank) placements and local shapes as the case expects");
  EXPECT_EQ(r.measured, (nlohmann::json{{"compared", 3}}));
  // Wrong shapes on every rank: rank 0's failure comes first.
  r = verdict({{p, {}, std::nullopt, std::vector<int64_t>{8, 32, 32}}});
  EXPECT_FALSE(r.passed);
  EXPECT_EQ(r.explanation, "rank 0: " + p + " local shape [4,32,32] vs expected [8,32,32]");
  EXPECT_TRUE(r.measured.is_null());
  // A wrong placement on rank 1 only.
  r = verdict({{p, {1}, "[Replicate()]", std::nullopt}});
  EXPECT_EQ(r.explanation, "rank 1: " + p + " placements [Shard(0)] vs expected [Replicate()]");
  // The case's order decides: expectation 1 on rank 1 before expectation 2 on rank 0.
  r = verdict({{p, {1}, "[Replicate()]", std::nullopt}, {"model.nope", {0}, std::nullopt, std::nullopt}});
  EXPECT_EQ(r.explanation, "rank 1: " + p + " placements [Shard(0)] vs expected [Replicate()]");
  r = verdict({{"model.nope", {0}, std::nullopt, std::nullopt}});
  EXPECT_EQ(r.explanation, "rank 0: model.nope is not among the rank's parameters");
}

TEST(ExpectedPlacements, JsonRoundTrip) {
  const std::vector<PlacementExpectation> e = {{"a", {1, 2}, "[Shard(0)]", std::vector<int64_t>{2, 3}},
                                               {"b", {}, std::nullopt, std::nullopt}};
  const auto j = placementExpectationsToJson(e);
  EXPECT_EQ(j.dump(), R"([{"local_shape":[2,3],"param":"a","placements":"[Shard(0)]","ranks":[1,2]},{"param":"b"}])");
  const auto back = placementExpectationsFromJson(j);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].ranks, (std::vector<int>{1, 2}));
  EXPECT_EQ(*back[0].localShape, (std::vector<int64_t>{2, 3}));
  EXPECT_FALSE(back[1].placements.has_value());
  EXPECT_THROW(placementExpectationsFromJson(nlohmann::json::parse(R"([{"ranks": [0]}])")), HarnessError);
}

}  // namespace
}  // namespace moe::checks
