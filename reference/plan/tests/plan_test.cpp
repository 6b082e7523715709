// Plans and styles without ranks: pattern matching, first-match-wins, the
// error cases, and every style's placements (expected placements are written
// out by hand from the style table, not computed by the code under test).
#include "common/error_of.h"
#include <gtest/gtest.h>

#include "common/error.h"
#include "reference/model/family.h"
#include "reference/plan/plan.h"
#include "reference/plan/style_registry.h"

namespace moe::plan {
namespace {

using ref::Placement;

ref::ModelConfig testConfig() {
  auto c = ref::tinyTestConfig();
  c.numExperts = 8;
  c.numHiddenLayers = 3;
  c.mlpOnlyLayers = {0};
  c.numAttentionHeads = 4;
  c.numKeyValueHeads = 2;
  c.headDim = 8;
  c.hiddenSize = 32;
  c.moeIntermediateSize = 16;
  c.intermediateSize = 32;
  c.validate();
  return c;
}

mesh::MeshShape meshOf(std::vector<mesh::MeshDim> dims) {
  int w = 1;
  for (auto& d : dims) w *= d.size;
  return mesh::MeshShape(dims, w);
}

using ::moe::testutil::errorOf;

TEST(PlanPattern, StarMatchesExactlyOneSegment) {
  EXPECT_TRUE(patternMatches("model.layers.*.mlp.gate", "model.layers.12.mlp.gate"));
  EXPECT_FALSE(patternMatches("model.layers.*.mlp.gate", "model.layers.1.2.mlp.gate"));
  EXPECT_FALSE(patternMatches("model.layers.*.mlp.gate", "model.layers.mlp.gate"));
  EXPECT_FALSE(patternMatches("model.layers.*", "model.layers.1.mlp"));
  EXPECT_TRUE(patternMatches("*.*", "a.b"));
}

TEST(PlanParse, KeepsKeyOrderAndAcceptsPairs) {
  auto p = Plan::parse(R"({"z.b": "colwise", "a.b": "rowwise", "m.*": "replicate"})");
  ASSERT_EQ(p.entries.size(), 3u);
  EXPECT_EQ(p.entries[0].pattern, "z.b");
  EXPECT_EQ(p.entries[1].style, "rowwise");
  auto q = Plan::parse(R"([["x.y", "colwise"], ["x.y", "rowwise"]])");
  ASSERT_EQ(q.entries.size(), 2u);
  EXPECT_EQ(q.entries[1].style, "rowwise");
  EXPECT_NE(errorOf([] { Plan::parse("[1, 2]"); }), "");
  EXPECT_NE(errorOf([] { Plan::parse("{oops"); }).find("malformed"), std::string::npos);
}

TEST(PlanApply, UnknownStyleListsKnownOnes) {
  auto cfg = testConfig();
  auto e = errorOf([&] {
    applyPlan(Plan::parse(R"({"model.layers.*.mlp.gate": "colwize"})"), cfg, meshOf({{"tp", 2}}));
  });
  EXPECT_NE(e.find("unknown plan style \"colwize\""), std::string::npos) << e;
  EXPECT_NE(e.find("moe_tp_down_rowwise"), std::string::npos) << e;
}

TEST(PlanApply, PatternMatchingNothingIsAnError) {
  auto cfg = testConfig();
  auto e = errorOf([&] {
    applyPlan(Plan::parse(R"({"model.layers.*.mlp.experts.up_proj": "colwise"})"), cfg,
              meshOf({{"tp", 2}}));
  });
  EXPECT_NE(e.find("matches no parameter or module"), std::string::npos) << e;
}

TEST(PlanApply, WrongRankIsAnError) {
  auto cfg = testConfig();
  auto e = errorOf([&] {
    applyPlan(Plan::parse(R"({"model.norm.weight": "colwise"})"), cfg, meshOf({{"tp", 2}}));
  });
  EXPECT_NE(e.find("model.norm.weight has 1 dims"), std::string::npos) << e;
  e = errorOf([&] {
    applyPlan(Plan::parse(R"({"model.layers.*.self_attn.q_proj": "grouped_gemm"})"), cfg,
              meshOf({{"ep", 2}}));
  });
  // grouped_gemm takes fused expert tensors of rank >= 2 ([E, ...]: gpt_oss's
  // per-expert biases are [E, n]); a dense 2-dim weight is refused by name.
  EXPECT_NE(e.find("model.layers.0.self_attn.q_proj.weight is not a fused expert tensor"), std::string::npos) << e;
}

TEST(PlanApply, NonDivisibleIsAnError) {
  auto cfg = testConfig();  // 8 experts, 4 heads, 2 kv heads, I = 16
  auto e = errorOf([&] {
    applyPlan(Plan::parse(R"({"model.layers.*.mlp.experts": "grouped_gemm"})"), cfg,
              meshOf({{"ep", 3}}));
  });
  EXPECT_NE(e.find("experts = 8 is not divisible by 3"), std::string::npos) << e;
  e = errorOf([&] {
    applyPlan(Plan::parse(R"({"model.layers.*.self_attn.k_proj.weight": "colwise"})"), cfg,
              meshOf({{"tp", 4}}));
  });
  EXPECT_NE(e.find("heads = 2 is not divisible by 4"), std::string::npos) << e;
  e = errorOf([&] {
    applyPlan(Plan::parse(R"({"model.layers.*.mlp.experts.gate_up_proj": "moe_tp_gate_up_colwise"})"),
              cfg, meshOf({{"tp", 3}}));
  });
  EXPECT_NE(e.find("not divisible by 6"), std::string::npos) << e;
}

TEST(PlanApply, ModulePatternPlacesEveryParameterOfTheModule) {
  auto cfg = testConfig();
  auto ap = applyPlan(Plan::parse(R"({
      "model.layers.1.self_attn.q_proj.weight": "replicate",
      "model.layers.*.self_attn.q_proj": "colwise",
      "model.layers.*.mlp.experts": "grouped_gemm",
      "model.layers.*.mlp.experts.gate_up_proj": "moe_tp_gate_up_colwise",
      "model.layers.*.mlp.experts.down_proj": "moe_tp_down_rowwise",
      "model.layers.*.mlp.gate": "ep_router"
    })"), cfg, meshOf({{"ep", 2}, {"tp", 2}}));
  const auto& q0 = ap.param("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(q0.placements, (std::vector<Placement>{Placement::replicate(), Placement::shard(0)}));
  EXPECT_EQ(q0.style, "colwise");
  const auto& q1 = ap.param("model.layers.1.self_attn.q_proj.weight");
  EXPECT_EQ(q1.placements, (std::vector<Placement>{Placement::replicate(), Placement::replicate()}));
  EXPECT_EQ(q1.style, "replicate");
  const auto& gu = ap.param("model.layers.1.mlp.experts.gate_up_proj");
  EXPECT_TRUE(gu.isExpert);
  EXPECT_EQ(gu.placements,
            (std::vector<Placement>{Placement::shard(0), Placement::stridedShard(-2, 2)}));
  EXPECT_EQ(gu.style, "grouped_gemm+moe_tp_gate_up_colwise");
  const auto& dn = ap.param("model.layers.2.mlp.experts.down_proj");
  EXPECT_EQ(dn.placements, (std::vector<Placement>{Placement::shard(0), Placement::shard(-1)}));
  const auto& router = ap.param("model.layers.1.mlp.gate.weight");
  EXPECT_EQ(router.style, "");
  EXPECT_TRUE(ap.comm("model.layers.1.mlp.gate", "ep").dispatchTokens);
  EXPECT_TRUE(ap.comm("model.layers.0.self_attn.q_proj", "tp").enterRegion);
  EXPECT_FALSE(ap.comm("model.layers.1.self_attn.q_proj").enterRegion);
}

TEST(PlanApply, StylesOfAMeshDimTheMeshLacksPlaceNothing) {
  auto cfg = testConfig();
  auto ap = applyPlan(Plan::parse(R"({"model.layers.*.self_attn.q_proj": "colwise",
                                      "model.layers.*.mlp.experts": "grouped_gemm"})"),
                      cfg, meshOf({{"ep", 2}}));
  EXPECT_EQ(ap.param("model.layers.0.self_attn.q_proj.weight").style, "");
  EXPECT_EQ(ap.param("model.layers.1.mlp.experts.down_proj").placements,
            (std::vector<Placement>{Placement::shard(0)}));
}

// Every style's placement and declared communication, from the table in
// docs/styles.md.
TEST(PlanStyles, Placements) {
  auto cfg = testConfig();
  auto mesh = meshOf({{"tp", 2}});
  struct Case {
    const char* style;
    const char* param;
    Placement want;
    ModuleComm comm;  // declared on tp
    bool shards;      // shardsParameters()
  };
  ModuleComm enter, exit, sp;
  enter.enterRegion = true;
  exit.exitRegion = true;
  sp.sequenceParallel = true;
  const std::vector<Case> cases = {
      {"colwise", "model.layers.0.self_attn.q_proj.weight", Placement::shard(0), enter, true},
      {"rowwise", "model.layers.0.self_attn.o_proj.weight", Placement::shard(1), exit, true},
      {"packed_colwise", "model.layers.1.mlp.experts.gate_up_proj", Placement::stridedShard(-2, 2), enter,
       true},
      {"sequence_parallel", "model.layers.0.input_layernorm.weight", Placement::replicate(), sp, false},
      {"replicate", "model.layers.0.mlp.gate_proj.weight", Placement::replicate(), {}, false},
      {"moe_tp_gate_up_colwise", "model.layers.1.mlp.experts.gate_up_proj", Placement::stridedShard(-2, 2), {},
       true},
      {"moe_tp_down_rowwise", "model.layers.1.mlp.experts.down_proj", Placement::shard(-1), {}, true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.style);
    Plan p;
    p.entries.push_back({c.param, c.style});
    auto ap = applyPlan(p, cfg, mesh);
    EXPECT_EQ(ap.param(c.param).placements, std::vector<Placement>{c.want});
    EXPECT_EQ(ap.param(c.param).style, c.style);
    auto segs = splitDotted(c.param);
    segs.pop_back();
    std::string module;
    for (size_t i = 0; i < segs.size(); ++i) module += (i ? "." : "") + segs[i];
    EXPECT_EQ(ap.comm(module, "tp"), c.comm) << ap.comm(module, "tp").describe();
    EXPECT_EQ(ap.param(c.param).shardedByStyle(), c.shards);
  }
  auto ep = meshOf({{"dp", 1}, {"ep", 4}});
  auto ap = applyPlan(Plan::parse(R"({"model.layers.*.mlp.experts": "grouped_gemm",
                                      "model.layers.*.mlp.gate": "ep_router"})"),
                      cfg, ep);
  EXPECT_EQ(ap.param("model.layers.1.mlp.experts.gate_up_proj").placements,
            (std::vector<Placement>{Placement::replicate(), Placement::shard(0)}));
  EXPECT_TRUE(ap.comm("model.layers.2.mlp.gate", "ep").dispatchTokens);
  EXPECT_TRUE(ap.comm("model.layers.2.mlp.experts", "ep").localExperts);
  EXPECT_EQ(ap.param("model.layers.1.mlp.gate.weight").style, "");
  auto tp = meshOf({{"tp", 2}});
  auto ap2 = applyPlan(Plan::parse(R"({"model.layers.*.mlp.experts": "moe_experts_allreduce"})"),
                       cfg, tp);
  EXPECT_TRUE(ap2.comm("model.layers.1.mlp.experts", "tp").sumExpertOutputs);
  EXPECT_EQ(ap2.param("model.layers.1.mlp.experts.gate_up_proj").style, "");
}

// gpt_oss attention by head: q/k/v weights AND biases Shard(0), sinks with
// their heads, o_proj.weight Shard(1) and its bias whole; the rowwise style
// refuses the bias by name (it must go to replicate, added once), and the
// head count must divide over tp.
TEST(PlanStyles, GptOssAttentionByHead) {
  auto cfg = ref::tinyGptOssTestConfig();  // 4 heads, 2 kv heads
  const char* plan = R"([
    ["model.layers.*.self_attn.q_proj", "gpt_oss_attn_colwise"],
    ["model.layers.*.self_attn.k_proj", "gpt_oss_attn_colwise"],
    ["model.layers.*.self_attn.v_proj", "gpt_oss_attn_colwise"],
    ["model.layers.*.self_attn.o_proj.weight", "gpt_oss_attn_rowwise"],
    ["model.layers.*.self_attn.o_proj.bias", "replicate"],
    ["model.layers.*.self_attn.sinks", "gpt_oss_sinks_by_head"]])";
  auto ap = applyPlan(Plan::parse(plan), cfg, meshOf({{"tp", 2}}));
  const std::vector<Placement> shard0{Placement::shard(0)}, shard1{Placement::shard(1)},
      whole{Placement::replicate()};
  for (const char* n : {"q_proj.weight", "q_proj.bias", "k_proj.bias", "v_proj.weight", "sinks"})
    EXPECT_EQ(ap.param(std::string("model.layers.0.self_attn.") + n).placements, shard0) << n;
  EXPECT_EQ(ap.param("model.layers.0.self_attn.o_proj.weight").placements, shard1);
  EXPECT_EQ(ap.param("model.layers.0.self_attn.o_proj.bias").placements, whole);
  EXPECT_TRUE(ap.comm("model.layers.0.self_attn.o_proj", "tp").exitRegion);
  EXPECT_TRUE(ap.comm("model.layers.0.self_attn.q_proj", "tp").enterRegion);
  auto e = errorOf([&] {
    applyPlan(Plan::parse(R"({"model.layers.*.self_attn.o_proj": "gpt_oss_attn_rowwise"})"), cfg,
              meshOf({{"tp", 2}}));
  });
  EXPECT_NE(e.find("o_proj.bias is the row-parallel bias"), std::string::npos) << e;
  e = errorOf([&] {
    applyPlan(Plan::parse(R"({"model.layers.*.self_attn.k_proj": "gpt_oss_attn_colwise"})"), cfg,
              meshOf({{"tp", 4}}));
  });
  EXPECT_NE(e.find("heads = 2 is not divisible by 4"), std::string::npos) << e;
  e = errorOf([&] {
    applyPlan(Plan::parse(R"({"model.layers.*.self_attn.sinks": "gpt_oss_sinks_by_head"})"), cfg,
              meshOf({{"tp", 8}}));
  });
  EXPECT_NE(e.find("not divisible by 8"), std::string::npos) << e;
}

TEST(PlanStyles, RegistryKnowsEveryStyle) {
  // The ten of Qwen3-MoE / Mixtral, gpt_oss's five, deepseek_v3's two.
  EXPECT_EQ(knownStyles().size(), 17u);
  EXPECT_TRUE(hasStyle("mla_colwise"));
  EXPECT_TRUE(hasStyle("mla_rowwise"));
  EXPECT_TRUE(hasStyle("ep_router"));
  EXPECT_TRUE(hasStyle("gpt_oss_gate_up_colwise"));
  EXPECT_TRUE(hasStyle("gpt_oss_down_rowwise"));
  EXPECT_TRUE(hasStyle("gpt_oss_attn_colwise"));
  EXPECT_TRUE(hasStyle("gpt_oss_attn_rowwise"));
  EXPECT_TRUE(hasStyle("gpt_oss_sinks_by_head"));
}

}  // namespace
}  // namespace moe::plan
