// ep_router: module style on the router (mlp.gate). The router weight stays
// replicated; its top-k outputs are dispatched with all_to_all over ep to the
// ranks owning the chosen experts and combined back locally, so the routing
// weights (and the router-score gradient) stay on the token's rank.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {

MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"ep_router", "ep", ModuleComm::with(&ModuleComm::dispatchTokens),
                         /*placesParameters=*/false});

}  // namespace moe::plan
