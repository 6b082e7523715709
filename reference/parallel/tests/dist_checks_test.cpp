// The shards a distributed run produces satisfy the harness checks
// (harness/checks placement and expert uniqueness), with parameters loaded
// through the checkpoint path (loadLocalParams from a TensorSource).
#include <gtest/gtest.h>

#include <iostream>

#include "harness/checks/expert_check.h"
#include "harness/checks/placement_check.h"
#include "harness/mesh/device_mesh.h"
#include "harness/tests/rank_test_util.h"
#include "reference/io/tensor_source.h"
#include "reference/model/init.h"
#include "reference/parallel/dist_model.h"

namespace moe::parallel {
namespace {

const char* kPlan = R"([
  ["model.layers.*.mlp.experts", "grouped_gemm"],
  ["model.layers.*.mlp.gate", "ep_router"],
  ["model.layers.*.self_attn.q_proj", "colwise"],
  ["model.layers.*.self_attn.k_proj", "colwise"],
  ["model.layers.*.self_attn.v_proj", "colwise"],
  ["model.layers.*.self_attn.o_proj", "rowwise"],
  ["model.layers.*.mlp.gate_proj", "colwise"],
  ["model.layers.*.mlp.up_proj", "colwise"],
  ["model.layers.*.mlp.down_proj", "rowwise"],
  ["model.layers.*.mlp.experts.gate_up_proj", "moe_tp_gate_up_colwise"],
  ["model.layers.*.mlp.experts.down_proj", "moe_tp_down_rowwise"],
  ["model.layers.*.mlp.experts", "moe_experts_allreduce"],
  ["model.layers.*.input_layernorm", "sequence_parallel"],
  ["model.layers.*.post_attention_layernorm", "sequence_parallel"],
  ["model.norm", "sequence_parallel"]])";

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
  auto applied = plan::applyPlan(plan::Plan::parse(kPlan), cfg, mesh.shape());
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
  trainer.step();
  return 0;
}

TEST(DistChecksGloo, Ep2Tp2ShardsPassPlacementAndExpertChecks) {
  auto r = ranktest::runRanks(4, [](const launch::RankContext&) { return body(); });
  std::cout << r.out;
  ASSERT_TRUE(r.result.ok) << r.all();
}

}  // namespace
}  // namespace moe::parallel
