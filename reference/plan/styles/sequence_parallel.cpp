// sequence_parallel: on norms. The weight stays replicated over tp, the
// activations around it are sharded on the sequence dim over tp (all-gather
// before colwise modules, reduce-scatter after rowwise ones), so its weight
// gradient (and the router's, computed on the local sequence shard) is
// summed over tp.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

class SequenceParallelStyle : public PlanStyle {
 public:
  std::string name() const override { return "sequence_parallel"; }
  std::string meshDim() const override { return "tp"; }
  ref::Placement placeParameter(const ParamTarget& p, const StyleContext&) const override {
    requireRank(*this, p, 1);
    return ref::Placement::replicate();
  }
  uint32_t moduleComm(const std::string&) const override { return kSequenceParallel; }
};

}  // namespace

MOE_REGISTER(PlanStyle, SequenceParallelStyle);

}  // namespace moe::plan
