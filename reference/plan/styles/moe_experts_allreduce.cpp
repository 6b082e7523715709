// moe_experts_allreduce: module style on mlp.experts under MoE tensor
// parallelism. Each tp rank computes a Partial(sum) of the experts' output
// (its slice of the intermediate dim); it is all-reduced over tp in the
// forward, and the gradients of the expert input and of the routing weights
// are all-reduced over tp in the backward.
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

class MoeExpertsAllreduceStyle : public PlanStyle {
 public:
  std::string name() const override { return "moe_experts_allreduce"; }
  std::string meshDim() const override { return "tp"; }
  bool placesParameters() const override { return false; }
  uint32_t moduleComm(const std::string&) const override { return kExpertsAllReduceTp; }
};

}  // namespace

MOE_REGISTER(PlanStyle, MoeExpertsAllreduceStyle);

}  // namespace moe::plan
