#pragma once
// The ZeRO-3 partition check. A flat-partitioning data-parallel wrapper
// (reference/parallel/stores/zero3_store.h) keeps, per group of parameters,
// ONE flat buffer: the group's plan-local tensors flattened and concatenated
// in a declared order, zero-padded to a multiple of the group size n; rank r
// of the group stores only elements [r*P, (r+1)*P), P = padded / n. The
// check proves, per rank and flat group, against an independent source of
// the full tensors (the checkpoint, or the reference's final parameters):
//  - the partition group is the one the design prescribes, derived here from
//    the placements alone: the mesh dims other than tp on which the member
//    parameters are NOT sharded (dense parameters: every data-parallel dim;
//    ep-sharded experts: their expert-data-parallel dims, never ep itself);
//    all members agree on it and the wrapper declares the same dims;
//  - every plan parameter is in exactly one flat group;
//  - the partition has P = ceil(N / n) elements (N: the members' plan-local
//    element count) and equals elements [r*P, (r+1)*P) of the concatenated
//    plan-local slices of the source, r = this rank's index in its group
//    (ascending global ranks, i.e. row-major over the group dims); padding
//    elements are 0.
// Failure messages name the rank, the flat group and the element:
//   "rank 1: flat group 'model.layers.1 [dp]': partition element 5 (flat 37,
//    model.layers.1.mlp.experts.down_proj local element 5) = 0.12 vs
//    checkpoint 0.31 (12 of 96 elements differ, max |diff| 0.4)"
#include <string>
#include <vector>

#include "harness/checks/check_context.h"

namespace moe::checks {

// FlatPartition: declared by the implementation (parallel/shards.h, check.h).

struct PartitionCheckOptions {
  double rtol = 0;  // partition values vs the source; 0, 0 = bitwise equal
  double atol = 0;
};

// Local (no communication): this rank's partitions. `plan` lists every plan
// parameter with its placements and global shape (`local` is not read);
// `source` holds the full tensors by name.
CheckResult checkFlatPartitions(const mesh::MeshShape& mesh, int rank, const std::vector<ParamShard>& plan,
                                const std::vector<FlatPartition>& partitions, const io::TensorSource& source,
                                const PartitionCheckOptions& options = {});
// Collective over mesh.world(): the local check on every rank, one verdict.
CheckResult checkFlatPartitionsCollective(mesh::DeviceMesh& mesh, const std::vector<ParamShard>& plan,
                                          const std::vector<FlatPartition>& partitions,
                                          const io::TensorSource& source,
                                          const PartitionCheckOptions& options = {});

// The mesh dims a parameter's flat group is partitioned over, from its
// placements: every dim except tp on which it is not sharded (mesh order).
std::vector<std::string> expectedPartitionDims(const mesh::MeshShape& mesh, const ParamShard& param);

// "zero3_partition": applies when the wrapper declares flat partitions
// (ParamStore::flatPartitions()), whatever it is called.
class FlatPartitionCheck : public Check {
 public:
  FlatPartitionCheck()
      : Check({"zero3_partition",
               "a flat-partitioning wrapper's partitions are its prescribed groups and hold exactly the rank's "
               "elements of the concatenated checkpoint tensors",
               CheckStage::kAfterLoad, 30, "mesh, params, flatPartitions, checkpoint",
               "exact: bitwise equal to the checkpoint's elements, padding exactly 0"}) {}
  bool applies(const CheckContext& ctx) const override;
  CheckResult run(const CheckContext& ctx) const override;
};

}  // namespace moe::checks
