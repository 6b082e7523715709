// The placement check's place in a run (stage, order, inputs, tolerance) and
// its registration. They live apart from placement_check.{h,cpp} only while
// another change rewrites how that check learns sharding styles; fold this
// class into placement_check.{h,cpp} once it lands.
#include "harness/checks/placement_check.h"
#include "common/registry.h"

namespace moe::checks {
namespace {

class RegisteredPlacementCheck final : public PlacementCheck {
 public:
  CheckStage stage() const override { return CheckStage::kAfterLoad; }
  int order() const override { return 10; }
  std::string inputs() const override { return "mesh, params, checkpoint, placement options"; }
  std::string toleranceSource() const override {
    return "exact: shapes and offsets from the placements; values bitwise equal to the checkpoint slice "
           "(PlacementCheckOptions rtol/atol, 0 in runs)";
  }
};

}  // namespace

MOE_REGISTER(Check, RegisteredPlacementCheck);

}  // namespace moe::checks
