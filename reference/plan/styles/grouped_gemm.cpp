// grouped_gemm: expert parallelism. Fused expert tensors [E, ...] are split
// on the expert dim over ep (Shard(0)); each rank runs its E/ep local experts
// (the local expert count is read from the local shape). The experts must
// divide evenly, so every rank owns the same contiguous block of experts.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

class GroupedGemmStyle : public PlanStyle {
 public:
  std::string name() const override { return "grouped_gemm"; }
  std::string meshDim() const override { return "ep"; }
  ref::Placement placeParameter(const ParamTarget& p, const StyleContext& ctx) const override {
    requireRank(*this, p, 3);
    if (!p.isExpert) fail("style grouped_gemm: parameter ", p.name, " is not a fused expert tensor");
    requireDivisible(*this, p, p.globalShape[0], ctx.meshDimSize, "experts");
    return ref::Placement::shard(0);
  }
  uint32_t moduleComm(const std::string&) const override { return kLocalExperts; }
};

}  // namespace

MOE_REGISTER(PlanStyle, GroupedGemmStyle);

}  // namespace moe::plan
