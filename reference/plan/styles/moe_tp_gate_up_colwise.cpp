// moe_tp_gate_up_colwise: experts.gate_up_proj [E, 2I, H] split over tp on
// the intermediate dim with gate and up kept apart: StridedShard(-2, 2)
// (rank r: its gate rows, then its up rows). Requires I % tp == 0.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

// Gate rows, then up rows: each tp rank takes its piece of both blocks.
ref::Placement placeGateUp(const PlanStyle& self, const ParamTarget& p, const StyleContext& ctx) {
  requireRank(self, p, 3);
  requireDivisible(self, p, p.globalShape[1], 2 * static_cast<int64_t>(ctx.meshDimSize),
                   "gate_up rows (2 x intermediate) over 2 x tp");
  return ref::Placement::stridedShard(-2, 2);
}

}  // namespace

MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"moe_tp_gate_up_colwise", "tp", {}, /*placesParameters=*/true,
                         /*shardsParameters=*/true, placeGateUp});

}  // namespace moe::plan
