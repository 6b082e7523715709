#pragma once
// The placement check: every parameter sits where its placements say, and
// the placements are what its style implies (two-sided):
//  - the declared placements give this rank's local shape, and the local
//    values equal the matching slice of the checkpoint (read slice by slice,
//    never whole);
//  - a parameter whose style is a sharding style is actually sharded: some
//    placement is Shard/StridedShard and it splits something on this mesh;
//  - every other parameter is Replicate() on every mesh dim and bitwise
//    identical on the ranks that replicate it (per-parameter hashes are
//    all-gathered; the differing ranks are named).
#include <vector>

#include "harness/checks/check_context.h"

namespace moe::checks {

// Collective over mesh.world(). `shards` is this rank's parameters (the same
// names on every rank); `checkpoint` holds the full tensors by name (may be
// null when options.compareValues is false).
CheckResult checkPlacement(mesh::DeviceMesh& mesh, const std::vector<ParamShard>& shards,
                           const io::TensorSource* checkpoint,
                           const PlacementCheckOptions& options = {});

class PlacementCheck : public Check {
 public:
  PlacementCheck()
      : Check({"placement",
               "local shapes, offsets and values match the declared placements and the checkpoint; sharding styles "
               "really shard, everything else is replicated and identical",
               CheckStage::kAfterLoad, 10, "mesh, params, checkpoint, placement options",
               "exact: shapes and offsets from the placements; values bitwise equal to the checkpoint slice "
               "(PlacementCheckOptions rtol/atol, 0 in runs)"}) {}
  CheckResult run(const CheckContext& ctx) const override;
};

}  // namespace moe::checks
