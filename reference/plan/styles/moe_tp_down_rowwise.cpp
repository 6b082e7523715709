// moe_tp_down_rowwise: experts.down_proj [E, H, I] split over tp on the
// intermediate dim: Shard(-1). The experts' output becomes Partial(sum) over
// tp (reduced by moe_experts_allreduce). Requires I % tp == 0.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

ref::Placement placeDown(const PlanStyle& self, const ParamTarget& p, const StyleContext& ctx) {
  requireRank(self, p, 3);
  requireDivisible(self, p, p.globalShape[2], ctx.meshDimSize, "intermediate");
  return ref::Placement::shard(-1);
}

}  // namespace

// No communication of its own: moe_experts_allreduce sums the Partial outputs.
MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"moe_tp_down_rowwise", "tp", {}, /*placesParameters=*/true, /*shardsParameters=*/true,
                         placeDown});

}  // namespace moe::plan
