// moe_tp_down_rowwise: experts.down_proj [E, H, I] split over tp on the
// intermediate dim: Shard(-1). The experts' output becomes Partial(sum) over
// tp (reduced by moe_experts_allreduce). Requires I % tp == 0.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

class MoeTpDownRowwiseStyle : public PlanStyle {
 public:
  std::string name() const override { return "moe_tp_down_rowwise"; }
  std::string meshDim() const override { return "tp"; }
  ref::Placement placeParameter(const ParamTarget& p, const StyleContext& ctx) const override {
    requireRank(*this, p, 3);
    requireDivisible(*this, p, p.globalShape[2], ctx.meshDimSize, "intermediate");
    return ref::Placement::shard(-1);
  }
};

}  // namespace

MOE_REGISTER(PlanStyle, MoeTpDownRowwiseStyle);

}  // namespace moe::plan
