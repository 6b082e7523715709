// mla_colwise: a per-head projection of deepseek_v3's multi-head latent
// attention (q_b_proj [heads·(nope+rope), q_lora_rank], q_proj
// [heads·(nope+rope), H], kv_b_proj [heads·(nope+v), kv_lora_rank]) split
// on its output dim over tp (Shard(0)), whole heads per rank: the region's
// input is replicated and its gradient all-reduced over tp, as colwise. The
// low-rank q_a_proj / kv_a_proj_with_mqa and their norms stay replicated
// inside the region (partial tp gradients, layer_plan.h).
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

ref::Placement placeMlaColwise(const PlanStyle& self, const ParamTarget& p, const StyleContext& ctx) {
  requireRank(self, p, 2);
  const auto& c = ctx.config;
  int64_t perHead = 0;
  if (p.name.ends_with("q_b_proj.weight") || p.name.ends_with("q_proj.weight"))
    perHead = c.qkNopeHeadDim + c.qkRopeHeadDim;
  else if (p.name.ends_with("kv_b_proj.weight"))
    perHead = c.qkNopeHeadDim + c.vHeadDim;
  if (perHead <= 0)
    fail("style ", self.name(), ": parameter ", p.name,
         " is not a per-head latent-attention projection (q_b_proj, q_proj or kv_b_proj of a deepseek_v3 model)");
  requireDivisible(self, p, p.globalShape[0] / perHead, ctx.meshDimSize, "heads");
  return ref::Placement::shard(0);
}

}  // namespace

MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"mla_colwise", "tp", ModuleComm::with(&ModuleComm::enterRegion),
                         /*placesParameters=*/true, /*shardsParameters=*/true, placeMlaColwise});

}  // namespace moe::plan
