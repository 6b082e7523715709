// The deepseek_v3 latent-attention styles: placements written out by hand
// from the style table, and whole-head divisibility by the family's per-head
// dims (not head_dim, which is the rotary dim for this family).
#include "common/error_of.h"
#include <gtest/gtest.h>

#include "reference/model/family.h"
#include "reference/plan/plan.h"

namespace moe::plan {
namespace {

using ref::Placement;

mesh::MeshShape tpMesh(int n) { return mesh::MeshShape({{"tp", n}}, n); }

const char* kMlaPlan = R"([
  ["model.layers.*.self_attn.q_b_proj", "mla_colwise"],
  ["model.layers.*.self_attn.kv_b_proj", "mla_colwise"],
  ["model.layers.*.self_attn.o_proj", "mla_rowwise"]
])";

TEST(MlaStyles, SplitWholeHeads) {
  auto cfg = ref::tinyDeepseekV3TestConfig();  // 4 heads, nope 4, rope 4, v 6
  auto ap = applyPlan(Plan::parse(kMlaPlan), cfg, tpMesh(2));
  EXPECT_EQ(ap.param("model.layers.0.self_attn.q_b_proj.weight").placements[0], Placement::shard(0));
  EXPECT_EQ(ap.param("model.layers.0.self_attn.kv_b_proj.weight").placements[0], Placement::shard(0));
  EXPECT_EQ(ap.param("model.layers.2.self_attn.o_proj.weight").placements[0], Placement::shard(1));
  EXPECT_EQ(ap.param("model.layers.0.self_attn.kv_a_proj_with_mqa.weight").placements[0], Placement::replicate());
  EXPECT_EQ(ap.param("model.layers.0.self_attn.q_a_layernorm.weight").placements[0], Placement::replicate());
  EXPECT_TRUE(ap.comm("model.layers.0.self_attn.q_b_proj", "tp").enterRegion);
  EXPECT_TRUE(ap.comm("model.layers.0.self_attn.o_proj", "tp").exitRegion);
}

TEST(MlaStyles, HeadsNotDivisibleAndWrongTargetsAreErrors) {
  auto cfg = ref::tinyDeepseekV3TestConfig();
  // 4 heads over 3: q_b_proj rows 32 = 4 heads of 8 (nope + rope).
  auto e = testutil::errorOf([&] { applyPlan(Plan::parse(kMlaPlan), cfg, tpMesh(3)); });
  EXPECT_NE(e.find("heads = 4 is not divisible by 3"), std::string::npos) << e;
  // o_proj's 24 columns are 4 heads of v_head_dim 6: tp 8 would split heads
  // although 24 / head_dim(4) = 6 ... the style counts v heads.
  e = testutil::errorOf([&] {
    applyPlan(Plan::parse(R"([["model.layers.*.self_attn.o_proj", "mla_rowwise"]])"), cfg, tpMesh(8));
  });
  EXPECT_NE(e.find("heads = 4 is not divisible by 8"), std::string::npos) << e;
  e = testutil::errorOf([&] {
    applyPlan(Plan::parse(R"([["model.layers.*.self_attn.q_a_proj", "mla_colwise"]])"), cfg, tpMesh(2));
  });
  EXPECT_NE(e.find("not a per-head latent-attention projection"), std::string::npos) << e;
}

}  // namespace
}  // namespace moe::plan
