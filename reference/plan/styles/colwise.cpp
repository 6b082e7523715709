// colwise: a Linear weight [out, in] split on its output dim over tp
// (Shard(0)); the module's input is replicated and its input gradient is
// all-reduced over tp. q/k/v projections must split whole heads.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

// q/k/v projections must split whole heads.
ref::Placement placeColwise(const PlanStyle& self, const ParamTarget& p, const StyleContext& ctx) {
  requireRank(self, p, 2);
  const bool qkv = p.name.ends_with("q_proj.weight") || p.name.ends_with("k_proj.weight") ||
                   p.name.ends_with("v_proj.weight");
  if (qkv) requireDivisible(self, p, p.globalShape[0] / ctx.config.headDim, ctx.meshDimSize, "heads");
  else requireDivisible(self, p, p.globalShape[0], ctx.meshDimSize, "output features");
  return ref::Placement::shard(0);
}

}  // namespace

MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"colwise", "tp", ModuleComm::with(&ModuleComm::enterRegion), /*placesParameters=*/true,
                         /*shardsParameters=*/true, placeColwise});

}  // namespace moe::plan
