// gpt_oss_down_rowwise: GPT-OSS's experts.down_proj [E, I, H] split over tp
// on the intermediate dim (its rows): Shard(1), so each rank's output is a
// Partial(sum) over tp (reduced by moe_experts_allreduce). The row-parallel
// bias experts.down_proj_bias [E, H] stays whole on every rank (style
// replicate, cases/plans/gpt_oss_moe_tp.json) and is added ONCE, to the reduced output; adding it on
// each tp rank before the reduction would count it tp times. Its gradient is
// then the full gradient on every tp rank (no tp sum). Requires I % tp == 0.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

ref::Placement placeRowParallel(const PlanStyle& self, const ParamTarget& p, const StyleContext& ctx) {
  if (!p.isExpert) fail("style gpt_oss_down_rowwise: parameter ", p.name, " is not a fused expert tensor");
  requireRank(self, p, 3);
  requireDivisible(self, p, p.globalShape[1], ctx.meshDimSize, "intermediate");
  return ref::Placement::shard(1);
}

}  // namespace

MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"gpt_oss_down_rowwise", "tp", {}, /*placesParameters=*/true,
                         /*shardsParameters=*/true, placeRowParallel});

}  // namespace moe::plan
