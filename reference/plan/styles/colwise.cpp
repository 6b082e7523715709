// colwise: a Linear weight [out, in] split on its output dim over tp
// (Shard(0)); the module's input is replicated and its input gradient is
// all-reduced over tp. q/k/v projections must split whole heads.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

bool endsWith(const std::string& s, const char* suffix) {
  const std::string t(suffix);
  return s.size() >= t.size() && s.compare(s.size() - t.size(), std::string::npos, t) == 0;
}

// q/k/v projections must split whole heads.
ref::Placement placeColwise(const PlanStyle& self, const ParamTarget& p, const StyleContext& ctx) {
  requireRank(self, p, 2);
  const bool qkv = endsWith(p.name, "q_proj.weight") || endsWith(p.name, "k_proj.weight") ||
                   endsWith(p.name, "v_proj.weight");
  if (qkv) requireDivisible(self, p, p.globalShape[0] / ctx.config.headDim, ctx.meshDimSize, "heads");
  else requireDivisible(self, p, p.globalShape[0], ctx.meshDimSize, "output features");
  return ref::Placement::shard(0);
}

}  // namespace

MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"colwise", "tp", ModuleComm::with(&ModuleComm::enterRegion), /*placesParameters=*/true,
                         /*shardsParameters=*/true, placeColwise});

}  // namespace moe::plan
