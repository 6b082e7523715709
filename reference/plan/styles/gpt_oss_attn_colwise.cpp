// gpt_oss_attn_colwise: GPT-OSS's self_attn.{q,k,v}_proj, column-parallel
// by head over tp WITH their biases: weight [heads * D, H] -> Shard(0) and
// bias [heads * D] -> Shard(0), so rank r holds whole heads
// [r heads / tp, (r + 1) heads / tp) and their bias entries (the plain
// colwise style places weights only). The module's input is replicated on
// tp and its input gradient all-reduced (enter_region). Requires the head
// count (q heads, or kv heads for k/v) % tp == 0.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

ref::Placement placeByHead(const PlanStyle& self, const ParamTarget& p, const StyleContext& ctx) {
  if (p.globalShape.size() != 1) requireRank(self, p, 2);
  requireDivisible(self, p, p.globalShape[0] / ctx.config.headDim, ctx.meshDimSize, "heads");
  return ref::Placement::shard(0);
}

}  // namespace

MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"gpt_oss_attn_colwise", "tp", ModuleComm::with(&ModuleComm::enterRegion),
                         /*placesParameters=*/true, /*shardsParameters=*/true, placeByHead});

}  // namespace moe::plan
