// gpt_oss_gate_up_colwise: GPT-OSS's experts.gate_up_proj [E, H, 2I] and
// gate_up_proj_bias [E, 2I] split over tp on their last dim with plain
// Shard(-1). The last dim interleaves gate and up (column 2j gate j, 2j + 1
// up j), so a contiguous chunk of 2I / tp columns (even, since I % tp == 0)
// holds whole (gate, up) pairs: rank r computes the clamped SwiGLU of
// intermediate units [r I / tp, (r + 1) I / tp) by itself. A stacked split
// (StridedShard(-1, 2), as moe_tp_gate_up_colwise makes of [E, 2I, H]) would
// hand rank r columns that are not pairs. Requires I % tp == 0.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

ref::Placement placeInterleaved(const PlanStyle& self, const ParamTarget& p, const StyleContext& ctx) {
  if (p.globalShape.size() != 2) requireRank(self, p, 3);
  if (!p.isExpert) fail("style gpt_oss_gate_up_colwise: parameter ", p.name, " is not a fused expert tensor");
  requireDivisible(self, p, p.globalShape.back(), 2 * static_cast<int64_t>(ctx.meshDimSize),
                   "interleaved gate/up columns (2 x intermediate) over 2 x tp, so each rank holds whole pairs");
  return ref::Placement::shard(-1);
}

}  // namespace

// No communication of its own: moe_experts_allreduce sums the experts' Partial outputs.
MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"gpt_oss_gate_up_colwise", "tp", {}, /*placesParameters=*/true,
                         /*shardsParameters=*/true, placeInterleaved});

}  // namespace moe::plan
