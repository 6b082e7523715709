// moe_experts_allreduce: module style on mlp.experts under MoE tensor
// parallelism. Each tp rank computes a Partial(sum) of the experts' output
// (its slice of the intermediate dim); it is all-reduced over tp in the
// forward, and the gradients of the expert input and of the routing weights
// are all-reduced over tp in the backward.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {

MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"moe_experts_allreduce", "tp", ModuleComm::with(&ModuleComm::sumExpertOutputs),
                         /*placesParameters=*/false});

}  // namespace moe::plan
