// moe_tp_gate_up_colwise: experts.gate_up_proj [E, 2I, H] split over tp on
// the intermediate dim with gate and up kept apart: StridedShard(-2, 2)
// (rank r: its gate rows, then its up rows). Requires I % tp == 0.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

class MoeTpGateUpColwiseStyle : public PlanStyle {
 public:
  std::string name() const override { return "moe_tp_gate_up_colwise"; }
  std::string meshDim() const override { return "tp"; }
  ref::Placement placeParameter(const ParamTarget& p, const StyleContext& ctx) const override {
    requireRank(*this, p, 3);
    requireDivisible(*this, p, p.globalShape[1], 2 * static_cast<int64_t>(ctx.meshDimSize),
                     "gate_up rows (2 x intermediate) over 2 x tp");
    return ref::Placement::stridedShard(-2, 2);
  }
};

}  // namespace

MOE_REGISTER(PlanStyle, MoeTpGateUpColwiseStyle);

}  // namespace moe::plan
