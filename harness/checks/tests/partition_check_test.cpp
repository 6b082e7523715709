// The ZeRO-3 partition check (partition_check.h) on hand-built partitions:
// passes on the partitions the design prescribes, fails on each planted
// wrong one (a partition shifted by one element, experts partitioned over
// the dense group, a mixed group, a missing or duplicated parameter,
// non-zero padding). No ranks: every rank's view is evaluated in-process.
#include <gtest/gtest.h>

#include "common/tests/text_assert.h"

#include "harness/checks/partition_check.h"
#include "reference/io/tensor_source.h"

namespace moe::checks {
namespace {

using testutil::has;

// Mesh {"dp":2,"ep":2} (rank = dp * 2 + ep). A dense vector of 5 elements
// (replicated) and an expert tensor [4, 3] sharded over ep (2 experts per
// rank); values encode their global index: dense i -> 100 + i, expert
// (e, j) -> 10 * e + j.
struct Fixture {
  mesh::MeshShape mesh{{{"dp", 2}, {"ep", 2}}, 4};
  std::vector<ParamShard> plan;
  io::MapTensorSource source;

  static io::MapTensorSource makeSource() {
    auto dense = at::arange(5, at::kFloat) + 100;
    auto experts = (at::arange(4, at::kFloat).unsqueeze(1) * 10 + at::arange(3, at::kFloat)).contiguous();
    return io::MapTensorSource({{"dense", dense}, {"experts", experts}}, "checkpoint");
  }
  Fixture() : source(makeSource()) {
    ParamShard d;
    d.name = "dense";
    d.globalShape = {5};
    d.placements = {ref::Placement::replicate(), ref::Placement::replicate()};
    ParamShard e;
    e.name = "experts";
    e.globalShape = {4, 3};
    e.placements = {ref::Placement::replicate(), ref::Placement::shard(0)};
    e.isExpert = true;
    plan = {d, e};
  }

  // What the design prescribes, written out by hand for `rank`:
  // dense over all 4 ranks: 5 elements padded to 8, 2 per rank;
  // experts over dp only (edp): the rank's 6 local elements, 3 per dp rank.
  std::vector<FlatPartition> correct(int rank) const {
    const int dp = rank / 2, ep = rank % 2;
    std::vector<float> denseFlat = {100, 101, 102, 103, 104, 0, 0, 0};
    std::vector<float> expertFlat;
    for (int e = 2 * ep; e < 2 * ep + 2; ++e)
      for (int j = 0; j < 3; ++j) expertFlat.push_back(static_cast<float>(10 * e + j));
    auto d = at::tensor(std::vector<float>(denseFlat.begin() + 2 * rank, denseFlat.begin() + 2 * rank + 2));
    auto x = at::tensor(std::vector<float>(expertFlat.begin() + 3 * dp, expertFlat.begin() + 3 * dp + 3));
    return {{"dense group", {"dense"}, {"dp", "ep"}, d}, {"expert group", {"experts"}, {"dp"}, x}};
  }

  CheckResult run(int rank, const std::vector<FlatPartition>& parts) const {
    return checkFlatPartitions(mesh, rank, plan, parts, source);
  }
};

TEST(PartitionCheck, PrescribedPartitionsPassOnEveryRank) {
  Fixture f;
  for (int r = 0; r < 4; ++r) {
    auto res = f.run(r, f.correct(r));
    EXPECT_TRUE(res.passed) << "rank " << r << ": " << res.explanation;
    EXPECT_EQ(res.measured["padding_elements"].get<int64_t>(), 3);  // dense: 8 - 5
  }
}

TEST(PartitionCheck, PartitionShiftedByOneElementFails) {
  Fixture f;
  // Rank 1 holds dense elements [3, 5) instead of [2, 4).
  auto parts = f.correct(1);
  parts[0].local = at::tensor(std::vector<float>{103, 104});
  auto res = f.run(1, parts);
  ASSERT_FALSE(res.passed);
  EXPECT_TRUE(has(res.explanation, "rank 1: flat group 'dense group': partition element 0 (flat 2, dense local element 2) = 103 vs checkpoint 102"));
}

TEST(PartitionCheck, ExpertsPartitionedOverTheDenseGroupFail) {
  Fixture f;
  // The wrapper partitions the experts over dp+ep (4 ranks) instead of edp.
  auto parts = f.correct(2);
  parts[1].dims = {"dp", "ep"};
  parts[1].local = at::tensor(std::vector<float>{2, 10});  // 2 of the 8 padded elements
  auto res = f.run(2, parts);
  ASSERT_FALSE(res.passed);
  EXPECT_TRUE(has(res.explanation, "rank 2: flat group 'expert group': partitioned over dp+ep, its parameters' data-parallel group is dp"));
  // Even declared as dp, a 4-way partition has the wrong size.
  parts[1].dims = {"dp"};
  res = f.run(2, parts);
  ASSERT_FALSE(res.passed);
  EXPECT_TRUE(has(res.explanation, "partition shape [2] vs expected [3] (6 elements + 0 padding over 2 ranks of dp)"));
}

TEST(PartitionCheck, WrongRankSliceFails) {
  Fixture f;
  // Rank 3 (dp 1) holds dp 0's expert partition.
  auto parts = f.correct(3);
  parts[1].local = f.correct(1)[1].local;
  auto res = f.run(3, parts);
  ASSERT_FALSE(res.passed);
  EXPECT_TRUE(has(res.explanation, "partition element 0 (flat 3, experts local element 3) = 20 vs checkpoint 30"));
}

TEST(PartitionCheck, MixedGroupFails) {
  Fixture f;
  FlatPartition mixed{"mixed", {"dense", "experts"}, {"dp", "ep"}, at::zeros({3})};
  auto res = f.run(0, {mixed});
  ASSERT_FALSE(res.passed);
  EXPECT_TRUE(has(res.explanation, "members dense (partitioned over dp+ep) and experts (over dp) need different groups"));
}

TEST(PartitionCheck, MissingAndDuplicatedParametersFail) {
  Fixture f;
  auto parts = f.correct(0);
  auto res = f.run(0, {parts[0]});
  ASSERT_FALSE(res.passed);
  EXPECT_TRUE(has(res.explanation, "rank 0: experts is in no flat group"));
  parts.push_back(parts[0]);
  parts.back().group = "again";
  res = f.run(0, parts);
  ASSERT_FALSE(res.passed);
  EXPECT_TRUE(has(res.explanation, "rank 0: dense is in flat groups 'dense group' and 'again'"));
}

TEST(PartitionCheck, NonZeroPaddingFails) {
  Fixture f;
  // Rank 3 holds dense elements 6, 7: padding only.
  auto parts = f.correct(3);
  ASSERT_TRUE(f.run(3, parts).passed);
  parts[0].local = at::tensor(std::vector<float>{0, 1});
  auto res = f.run(3, parts);
  ASSERT_FALSE(res.passed);
  EXPECT_TRUE(has(res.explanation, "partition element 1 (flat 7, padding) = 1 vs checkpoint 0"));
}

TEST(PartitionCheck, ToleranceAppliesToValues) {
  Fixture f;
  auto parts = f.correct(0);
  parts[0].local = parts[0].local + 1e-3;
  EXPECT_FALSE(f.run(0, parts).passed);
  PartitionCheckOptions o;
  o.atol = 2e-3;
  EXPECT_TRUE(checkFlatPartitions(f.mesh, 0, f.plan, parts, f.source, o).passed);
}

TEST(PartitionCheck, ExpectedDimsFollowPlacements) {
  Fixture f;
  EXPECT_EQ(expectedPartitionDims(f.mesh, f.plan[0]), (std::vector<std::string>{"dp", "ep"}));
  EXPECT_EQ(expectedPartitionDims(f.mesh, f.plan[1]), (std::vector<std::string>{"dp"}));
  // tp never partitions.
  mesh::MeshShape tp{{{"dp", 2}, {"tp", 2}}, 4};
  EXPECT_EQ(expectedPartitionDims(tp, f.plan[0]), (std::vector<std::string>{"dp"}));
}

}  // namespace
}  // namespace moe::checks
