// gpt_oss_sinks_by_head: GPT-OSS's self_attn.sinks [num_heads] (one learned
// logit per query head) split over tp with the heads that use it:
// Shard(0), matching gpt_oss_attn_colwise's split of q_proj. No
// communication: each rank's softmax reads only its own heads' sinks.
// Requires num_heads % tp == 0.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

ref::Placement placeSinks(const PlanStyle& self, const ParamTarget& p, const StyleContext& ctx) {
  requireRank(self, p, 1);
  requireDivisible(self, p, p.globalShape[0], ctx.meshDimSize, "heads");
  return ref::Placement::shard(0);
}

}  // namespace

MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"gpt_oss_sinks_by_head", "tp", {}, /*placesParameters=*/true,
                         /*shardsParameters=*/true, placeSinks});

}  // namespace moe::plan
