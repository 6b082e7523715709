// rowwise: a Linear weight [out, in] split on its input dim over tp
// (Shard(1)); the module's output is Partial(sum) and is all-reduced over tp
// (identity backward). o_proj must split whole heads.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

// o_proj must split whole heads.
ref::Placement placeRowwise(const PlanStyle& self, const ParamTarget& p, const StyleContext& ctx) {
  requireRank(self, p, 2);
  const std::string o = "o_proj.weight";
  if (p.name.size() >= o.size() && p.name.compare(p.name.size() - o.size(), o.size(), o) == 0)
    requireDivisible(self, p, p.globalShape[1] / ctx.config.headDim, ctx.meshDimSize, "heads");
  else
    requireDivisible(self, p, p.globalShape[1], ctx.meshDimSize, "input features");
  return ref::Placement::shard(1);
}

}  // namespace

MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"rowwise", "tp", ModuleComm::with(&ModuleComm::exitRegion), /*placesParameters=*/true,
                         /*shardsParameters=*/true, placeRowwise});

}  // namespace moe::plan
