// replicate: the parameter is whole on every tp rank; no communication.
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

class ReplicateStyle : public PlanStyle {
 public:
  std::string name() const override { return "replicate"; }
  std::string meshDim() const override { return "tp"; }
  ref::Placement placeParameter(const ParamTarget&, const StyleContext&) const override {
    return ref::Placement::replicate();
  }
};

}  // namespace

MOE_REGISTER(PlanStyle, ReplicateStyle);

}  // namespace moe::plan
