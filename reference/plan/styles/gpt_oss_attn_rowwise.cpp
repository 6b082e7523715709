// gpt_oss_attn_rowwise: GPT-OSS's self_attn.o_proj, row-parallel by head
// over tp: weight [H, heads * D] -> Shard(1), so each rank's output is a
// Partial(sum) over tp (exit_region all-reduces it). Its bias [H] stays
// whole on every tp rank (Replicate()) and is added ONCE, to the reduced
// output (the plan names o_proj.weight for this style, which declares exit_region
// for its module o_proj, and maps o_proj.bias to style replicate);
// adding it on each rank before the reduction would count it tp times. Its
// gradient is then whole on every tp rank. Requires heads % tp == 0.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

ref::Placement placeRowByHead(const PlanStyle& self, const ParamTarget& p, const StyleContext& ctx) {
  if (p.globalShape.size() == 1)
    fail("style gpt_oss_attn_rowwise: ", p.name, " is the row-parallel bias: name o_proj.weight in ",
         "this entry and map o_proj.bias to style replicate (it is added once, after the tp reduction)");
  requireRank(self, p, 2);
  requireDivisible(self, p, p.globalShape[1] / ctx.config.headDim, ctx.meshDimSize, "heads");
  return ref::Placement::shard(1);
}

}  // namespace

MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"gpt_oss_attn_rowwise", "tp", ModuleComm::with(&ModuleComm::exitRegion),
                         /*placesParameters=*/true, /*shardsParameters=*/true, placeRowByHead});

}  // namespace moe::plan
