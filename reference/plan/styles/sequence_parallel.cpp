// sequence_parallel: on norms. The weight stays replicated over tp, the
// activations around it are sharded on the sequence dim over tp (all-gather
// before colwise modules, reduce-scatter after rowwise ones), so its weight
// gradient (and the router's, computed on the local sequence shard) is
// summed over tp.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

ref::Placement placeNorm(const PlanStyle& self, const ParamTarget& p, const StyleContext&) {
  requireRank(self, p, 1);
  return ref::Placement::replicate();
}

}  // namespace

MOE_REGISTER(PlanStyle, PlanStyle,
             StyleTraits{"sequence_parallel", "tp", ModuleComm::with(&ModuleComm::sequenceParallel),
                         /*placesParameters=*/true, /*shardsParameters=*/false, placeNorm});

}  // namespace moe::plan
