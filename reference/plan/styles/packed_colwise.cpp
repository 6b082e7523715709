// packed_colwise: a fused packed weight (gate and up rows stacked on the
// output dim: dense [2I, H] or experts [E, 2I, H]) split colwise over tp
// without mixing the halves: StridedShard(-2, 2), so rank r holds its gate
// rows then its up rows. Input gradient all-reduced over tp, like colwise.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

ref::Placement placePacked(const PlanStyle& self, const ParamTarget& p, const StyleContext& ctx) {
  if (p.globalShape.size() != 2 && p.globalShape.size() != 3) requireRank(self, p, 2);
  const int64_t packed = p.globalShape[p.globalShape.size() - 2];
  requireDivisible(self, p, packed, 2 * static_cast<int64_t>(ctx.meshDimSize), "packed dim (2 blocks x tp)");
  return ref::Placement::stridedShard(-2, 2);
}

}  // namespace

MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"packed_colwise", "tp", ModuleComm::with(&ModuleComm::enterRegion),
                         /*placesParameters=*/true, /*shardsParameters=*/true, placePacked});

}  // namespace moe::plan
