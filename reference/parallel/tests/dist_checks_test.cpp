// The shards a distributed run produces satisfy the harness checks
// (harness/checks placement and expert uniqueness), with parameters loaded
// through the checkpoint path (loadLocalParams from a TensorSource).
#include <gtest/gtest.h>

#include <iostream>

#include "harness/checks/comm_check.h"
#include "harness/checks/expert_check.h"
#include "harness/checks/placement_check.h"
#include "harness/mesh/device_mesh.h"
#include "harness/tests/rank_test_util.h"
#include "reference/io/tensor_source.h"
#include "reference/model/init.h"
#include "reference/parallel/dist_model.h"
#include "reference/parallel/tests/test_plans.h"

namespace moe::parallel {
namespace {

int body() {
  auto world = ranktest::rankWorld();
  mesh::DeviceMesh mesh(world, {{"ep", 2}, {"tp", 2}});
  auto cfg = ref::tinyTestConfig();
  cfg.numExperts = 8;
  cfg.numHiddenLayers = 3;
  cfg.mlpOnlyLayers = {0};
  cfg.validate();
  auto full = ref::initParameters(cfg, /*seed=*/3);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& item : full) tensors[item.key()] = item.value();
  io::MapTensorSource source(tensors, "init seed 3");
  auto applied = plan::applyPlan(plan::Plan::parse(testing::joinPlans({testing::kEpPlan, testing::kTpPlan, testing::kSpEntries})), cfg, mesh.shape());
  auto local = loadLocalParams(applied, mesh, source);
  ref::TrainOptions opts;
  opts.steps = 1;
  opts.batchSize = 4;
  opts.seqLen = 8;
  DistTrainer trainer(cfg, mesh, applied, local, opts);
  auto shards = trainer.paramShards();
  auto placement = checks::checkPlacement(mesh, shards, &source);
  auto experts = checks::checkExpertUniqueness(mesh, shards, &source);
  std::cout << "placement: " << placement.passed << " " << placement.explanation << "\n"
            << "expert_uniqueness: " << experts.passed << " " << experts.explanation << std::endl;
  RANK_CHECK(placement.passed, placement.explanation);
  RANK_CHECK(experts.passed, experts.explanation);
  // The step's collectives are exactly what the plan implies (calls and
  // bytes per (group, op)); the second step gets one planted extra tp
  // all_reduce, which the communication check must name.
  {
    checks::CommWindow window;
    trainer.step();
    auto ok = checks::checkCommunicationCollective(*world, window.delta(), trainer.expectedStepComm());
    std::cout << "communication: " << ok.passed << " " << ok.explanation << std::endl;
    RANK_CHECK(ok.passed, ok.explanation);
  }
  {
    checks::CommWindow window;
    trainer.step();
    auto extra = at::ones({3});
    mesh.comm("tp")->allReduce(extra);
    auto bad = checks::checkCommunicationCollective(*world, window.delta(), trainer.expectedStepComm());
    std::cout << "communication with a planted all_reduce: " << bad.passed << " " << bad.explanation << std::endl;
    RANK_CHECK(!bad.passed, "an extra tp all_reduce passed the communication check");
    RANK_CHECK(bad.explanation.find("all_reduce") != std::string::npos &&
                   bad.explanation.find(mesh.comm("tp")->name()) != std::string::npos,
               "the failure does not name the op and group: ", bad.explanation);
  }
  return 0;
}

TEST(DistChecksGloo, Ep2Tp2ShardsPassPlacementExpertAndCommunicationChecks) {
  auto r = ranktest::runRanks(4, [](const launch::RankContext&) { return body(); });
  std::cout << r.out;
  ASSERT_TRUE(r.result.ok) << r.all();
}

}  // namespace
}  // namespace moe::parallel
