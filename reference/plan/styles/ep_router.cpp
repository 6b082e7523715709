// ep_router: module style on the router (mlp.gate). The router weight stays
// replicated; its top-k outputs are dispatched with all_to_all over ep to the
// ranks owning the chosen experts and combined back locally, so the routing
// weights (and the router-score gradient) stay on the token's rank.
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

class EpRouterStyle : public PlanStyle {
 public:
  std::string name() const override { return "ep_router"; }
  std::string meshDim() const override { return "ep"; }
  bool placesParameters() const override { return false; }
  uint32_t moduleComm(const std::string&) const override { return kEpDispatch; }
};

}  // namespace

MOE_REGISTER(PlanStyle, EpRouterStyle);

}  // namespace moe::plan
