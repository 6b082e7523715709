// Loading paths without ranks: the registry, the EP rule, and the test
// oracle (loading_test_util.h) against hand-computed slices.
#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"
#include "reference/model/config.h"
#include "reference/parallel/loading.h"
#include "reference/parallel/tests/loading_test_util.h"
#include "reference/plan/plan.h"

namespace moe::parallel {
namespace {

TEST(LoadPaths, NamesInRegistryOrderAndRoundTrip) {
  EXPECT_EQ(loadPathNames(), (std::vector<std::string>{"init_then_load", "rank0_broadcast", "shard_on_read"}));  // registry order: sorted
  for (const auto& n : loadPathNames()) EXPECT_EQ(loadPathName(parseLoadPath(n)), n);
  EXPECT_EQ(parseLoadPath("rank0_broadcast"), LoadPath::kRank0Broadcast);
  EXPECT_EQ(parseLoadPath("init_then_load"), LoadPath::kInitThenLoad);
}

TEST(LoadPaths, UnknownNameListsTheKnownOnes) {
  try {
    parseLoadPath("rank0-broadcast");
    FAIL() << "no error for an unknown loading path";
  } catch (const HarnessError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("unknown loading path 'rank0-broadcast'"), std::string::npos) << m;
    EXPECT_NE(m.find("known: init_then_load, rank0_broadcast, shard_on_read"), std::string::npos) << m;
  }
}

TEST(LoadPaths, LoadParamsWithoutSourceIsAnError) {
  LoadOptions o;
  o.path = LoadPath::kInitThenLoad;
  try {
    loadParams(o);
    FAIL() << "no error without source, mesh and plan";
  } catch (const HarnessError& e) {
    EXPECT_NE(std::string(e.what()).find("source, mesh and plan are required (loading path init_then_load)"),
              std::string::npos)
        << e.what();
  }
}

// Which parameters rank0_broadcast must read per rank.
std::vector<std::string> epSharded(const std::string& planJson, const mesh::MeshShape& shape) {
  auto cfg = ref::tinyTestConfig();
  auto applied = plan::applyPlan(plan::Plan::parse(planJson), cfg, shape);
  std::vector<std::string> out;
  for (const auto& p : applied.params)
    if (isEpSharded(p, shape)) out.push_back(p.name);
  return out;
}

TEST(LoadPaths, EpShardedIsExactlyTheExpertsShardedOnEp) {
  const std::string ep = R"([["model.layers.*.mlp.experts", "grouped_gemm"], ["model.layers.*.mlp.gate", "ep_router"]])";
  const std::string moeTp = R"([["model.layers.*.mlp.experts.gate_up_proj", "moe_tp_gate_up_colwise"],
                                ["model.layers.*.mlp.experts.down_proj", "moe_tp_down_rowwise"]])";
  auto cfg = ref::tinyTestConfig();
  // Expected from the config, not from the plan code: every MoE layer's two
  // fused expert tensors.
  std::vector<std::string> experts;
  for (int64_t l = 0; l < cfg.numHiddenLayers; ++l) {
    if (!cfg.isMoeLayer(l)) continue;
    experts.push_back(moe::str("model.layers.", l, ".mlp.experts.gate_up_proj"));
    experts.push_back(moe::str("model.layers.", l, ".mlp.experts.down_proj"));
  }
  ASSERT_FALSE(experts.empty());
  EXPECT_EQ(epSharded(ep, mesh::MeshShape({{"ep", 2}}, 2)), experts);
  EXPECT_EQ(epSharded(ep, mesh::MeshShape({{"dp", 2}, {"ep", 2}}, 4)), experts);
  // Experts sharded on tp only are not EP-sharded: rank 0 may broadcast them.
  EXPECT_TRUE(epSharded(moeTp, mesh::MeshShape({{"tp", 2}}, 2)).empty());
  // An ep plan on a mesh without ep places nothing on ep.
  EXPECT_TRUE(epSharded(ep, mesh::MeshShape({{"dp", 2}}, 2)).empty());
}

// The oracle itself, against slices written out by hand.
TEST(LoadingOracle, ShardChunksLikeTorchWithEmptyTrailingPieces) {
  auto full = at::arange(10, at::kFloat).view({5, 2});
  auto shard0 = std::vector<ref::Placement>{ref::Placement::shard(0)};
  EXPECT_TRUE(at::equal(testing::expectedSlice(full, shard0, {4}, {0}), at::tensor({0.f, 1.f, 2.f, 3.f}).view({2, 2})));
  EXPECT_TRUE(at::equal(testing::expectedSlice(full, shard0, {4}, {2}), at::tensor({8.f, 9.f}).view({1, 2})));
  EXPECT_EQ(testing::expectedSlice(full, shard0, {4}, {3}).sizes(), (std::vector<int64_t>{0, 2}));
  // Shard(-1) over 2 of a [5, 2]: column 1.
  EXPECT_TRUE(at::equal(testing::expectedSlice(full, {ref::Placement::shard(-1)}, {2}, {1}),
                        at::tensor({1.f, 3.f, 5.f, 7.f, 9.f}).view({5, 1})));
}

TEST(LoadingOracle, StridedShardTakesItsGateRowsThenItsUpRows) {
  // gate_up [E=2, 2I=8, H=1]: gate rows 0..3, up rows 4..7 per expert.
  auto full = at::arange(16, at::kFloat).view({2, 8, 1});
  // ep=2 (Shard(0)) x tp=2 (StridedShard(-2, 2)), rank ep=1, tp=1: expert 1,
  // gate rows 2,3 and up rows 6,7 -> values 8+2, 8+3, 8+6, 8+7.
  auto got = testing::expectedSlice(full, {ref::Placement::shard(0), ref::Placement::stridedShard(-2, 2)}, {2, 2},
                                    {1, 1});
  EXPECT_TRUE(at::equal(got, at::tensor({10.f, 11.f, 14.f, 15.f}).view({1, 4, 1}))) << got;
}

TEST(LoadingOracle, BitwiseDiffSeesSignOfZeroAndNaNAndNamesValues) {
  auto a = at::tensor({1.f, 0.f, 3.f});
  EXPECT_EQ(testing::bitwiseDiff(a, a.clone()), "");
  EXPECT_NE(testing::bitwiseDiff(a, at::tensor({1.f, -0.f, 3.f})), "");
  auto nan = at::tensor({1.f, std::nanf(""), 3.f});
  EXPECT_NE(testing::bitwiseDiff(nan, a), "");
  const auto d = testing::bitwiseDiff(at::tensor({1.f, 2.f, 4.f}), a);
  EXPECT_NE(d.find("2 of 3 elements differ; first at flat index 1: 2 vs expected 0"), std::string::npos) << d;
  EXPECT_NE(testing::bitwiseDiff(a.view({3, 1}), a), "");
}

}  // namespace
}  // namespace moe::parallel
