// grouped_gemm: expert parallelism. Fused expert tensors [E, ...] are split
// on the expert dim over ep (Shard(0)); each rank runs its E/ep local experts
// (the local expert count is read from the local shape). The experts must
// divide evenly, so every rank owns the same contiguous block of experts.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

ref::Placement placeExperts(const PlanStyle& self, const ParamTarget& p, const StyleContext& ctx) {
  // [E, ...]: the fused weights (rank 3) and gpt_oss's per-expert biases
  // [E, n] (rank 2).
  if (p.globalShape.size() != 2) requireRank(self, p, 3);
  if (!p.isExpert) fail("style grouped_gemm: parameter ", p.name, " is not a fused expert tensor");
  requireDivisible(self, p, p.globalShape[0], ctx.meshDimSize, "experts");
  return ref::Placement::shard(0);
}

}  // namespace

MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"grouped_gemm", "ep", ModuleComm::with(&ModuleComm::localExperts),
                         /*placesParameters=*/true, /*shardsParameters=*/true, placeExperts});

}  // namespace moe::plan
