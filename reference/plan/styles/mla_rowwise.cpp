// mla_rowwise: deepseek_v3's latent-attention output projection o_proj
// [H, heads·v_head_dim] split on its input dim over tp (Shard(1)), whole
// heads per rank; its Partial(sum) output is all-reduced over tp, as rowwise.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

ref::Placement placeMlaRowwise(const PlanStyle& self, const ParamTarget& p, const StyleContext& ctx) {
  requireRank(self, p, 2);
  const std::string o = "o_proj.weight";
  if (p.name.size() < o.size() || p.name.compare(p.name.size() - o.size(), o.size(), o) != 0 ||
      ctx.config.vHeadDim <= 0)
    fail("style ", self.name(), ": parameter ", p.name,
         " is not a latent-attention o_proj (of a deepseek_v3 model)");
  requireDivisible(self, p, p.globalShape[1] / ctx.config.vHeadDim, ctx.meshDimSize, "heads");
  return ref::Placement::shard(1);
}

}  // namespace

MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"mla_rowwise", "tp", ModuleComm::with(&ModuleComm::exitRegion),
                         /*placesParameters=*/true, /*shardsParameters=*/true, placeMlaRowwise});

}  // namespace moe::plan
