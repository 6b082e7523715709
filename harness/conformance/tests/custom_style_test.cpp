// A plan style that exists only in this test binary: one placement function
// and one registration line, nothing else in the tree knows it. It runs in a real
// 2-rank Gloo job through the whole conformance run (load, train, every
// check), which proves that styles drive the distributed model and the
// checks: the model executes what the style declares (enter_region) and the
// placement check learns from the style itself that it shards.
//
// test_colwise is colwise under another name: Shard(0) of a Linear weight,
// its input entering the tensor-parallel region. test_colwise_strided is a
// broken variant: it declares the same communication but places the rows
// StridedShard(0, 2), so a rank's q/k/v heads are not the heads its o_proj
// columns expect. Its placements are honest (the placement check passes:
// every rank holds exactly what its placements say), the model computes
// the wrong attention, and parity must fail.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "harness/conformance/run_plan.h"
#include "harness/launch/launcher.h"
#include "harness/tests/rank_test_util.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

ref::Placement placeTestColwise(const PlanStyle& self, const ParamTarget& p, const StyleContext& ctx) {
  requireRank(self, p, 2);
  requireDivisible(self, p, p.globalShape[0], ctx.meshDimSize * ctx.config.headDim, "head rows");
  return ref::Placement::shard(0);
}

// The broken variant: honest about its placement, wrong about the heads.
ref::Placement placeTestStrided(const PlanStyle&, const ParamTarget&, const StyleContext&) {
  return ref::Placement::stridedShard(0, 2);
}

}  // namespace

MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"test_colwise", "tp", ModuleComm::with(&ModuleComm::enterRegion), /*placesParameters=*/true,
                         /*shardsParameters=*/true, placeTestColwise});
MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"test_colwise_strided", "tp", ModuleComm::with(&ModuleComm::enterRegion),
                         /*placesParameters=*/true, /*shardsParameters=*/true, placeTestStrided});

}  // namespace moe::plan

namespace moe::conformance {
namespace {

namespace fs = std::filesystem;

// tp=2 over tiny_moe: attention q/k/v with `qkvStyle`, o_proj rowwise; the
// dense MLP of layer 0 with test_colwise / rowwise; experts replicated.
std::string writePlan(const fs::path& dir, const std::string& qkvStyle) {
  nlohmann::ordered_json plan = nlohmann::ordered_json::array();
  for (const char* m : {"q_proj", "k_proj", "v_proj"})
    plan.push_back({std::string("model.layers.*.self_attn.") + m, qkvStyle});
  plan.push_back({"model.layers.*.self_attn.o_proj", "rowwise"});
  plan.push_back({"model.layers.*.mlp.gate_proj", "test_colwise"});
  plan.push_back({"model.layers.*.mlp.up_proj", "test_colwise"});
  plan.push_back({"model.layers.*.mlp.down_proj", "rowwise"});
  const fs::path path = dir / ("plan_" + qkvStyle + ".json");
  std::ofstream(path) << plan.dump(1);
  return path.string();
}

struct Outcome {
  launch::LaunchResult launch;
  nlohmann::json result;  // run-plan's result document (rank 0)
  std::string log;
  const nlohmann::json* check(const std::string& name) const {
    if (!result.contains("checks")) return nullptr;
    for (const auto& c : result.at("checks"))  // by reference: the pointer must outlive the loop
      if (c.value("check", "") == name) return &c;
    return nullptr;
  }
};

Outcome runWithStyle(const std::string& qkvStyle) {
  const fs::path dir = fs::temp_directory_path() / ("moe_custom_style_" + qkvStyle + "_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  RunPlanOptions o;
  o.configPath = std::string(MOE_SOURCE_DIR) + "/cases/configs/tiny_moe.json";
  o.mesh = R"({"tp":2})";
  o.planPath = writePlan(dir, qkvStyle);
  o.steps = 2;
  o.resultJson = (dir / "result.json").string();
  Outcome r;
  const ranktest::RankRun run = ranktest::runRanks(2, [&](const launch::RankContext&) { return runPlan(o); }, 240);
  r.launch = run.result;
  r.log = run.all();
  if (fs::exists(o.resultJson)) r.result = nlohmann::json::parse(std::ifstream(o.resultJson));
  fs::remove_all(dir);
  return r;
}

TEST(CustomStyle, TestOnlyStyleRunsWithEveryCheckPassing) {
  const Outcome r = runWithStyle("test_colwise");
  ASSERT_FALSE(r.result.is_null()) << "run-plan wrote no result\n" << r.log;
  ASSERT_TRUE(r.result.value("passed", false)) << r.result.dump(1) << "\n" << r.log;
  ASSERT_GE(r.result.at("checks").size(), 5u);
  for (const auto& c : r.result.at("checks")) EXPECT_TRUE(c.at("passed").get<bool>()) << c.dump();
  // The style really sharded (the placement check counted it) and really
  // communicated: the step-1 collectives include the tp region's all-reduces.
  ASSERT_NE(r.check("placement"), nullptr);
  ASSERT_NE(r.check("communication"), nullptr);
  bool tpAllReduce = false;
  for (const auto& c : r.result.at("step1_collectives_rank0"))
    tpAllReduce |= c.at("group") == "tp" && c.at("op") == "all_reduce" && c.at("calls").get<int>() > 0;
  EXPECT_TRUE(tpAllReduce) << r.result.at("step1_collectives_rank0").dump();
  EXPECT_EQ(r.launch.exitCode(), 0) << r.log;
}

TEST(CustomStyle, BrokenVariantFailsParity) {
  const Outcome r = runWithStyle("test_colwise_strided");
  ASSERT_FALSE(r.result.is_null()) << "run-plan wrote no result\n" << r.log;
  EXPECT_FALSE(r.result.value("passed", true));
  const auto* placement = r.check("placement");
  const auto* parity = r.check("parity");
  ASSERT_NE(placement, nullptr);
  ASSERT_NE(parity, nullptr);
  // Honest placements (every rank holds what StridedShard says), wrong maths.
  EXPECT_TRUE(placement->at("passed").get<bool>()) << placement->dump();
  EXPECT_FALSE(parity->at("passed").get<bool>()) << parity->dump();
  std::cout << "parity: " << parity->value("explanation", "") << std::endl;  // for the log
}

}  // namespace
}  // namespace moe::conformance
