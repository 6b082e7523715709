// replicate: the parameter is whole on every tp rank; no communication.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {

MOE_REGISTER(PlanStyle, PlanStyle, StyleTraits{"replicate", "tp"});

}  // namespace moe::plan
