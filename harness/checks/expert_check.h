#pragma once
// The expert-uniqueness check, for fused expert tensors (ParamShard::isExpert,
// dim 0 = experts, split with Shard(0) over "ep"):
//  - across the ranks of the cover dims (default "ep") the expert sets are
//    disjoint and together cover all experts ("experts 4-5 are held by no
//    ep rank", "experts 0-3 are held by ranks 0 and 1");
//  - each local expert equals its checkpoint expert, compared by exact
//    per-expert hashes (FNV-1a 64 of the bytes) of the local row and of the
//    checkpoint slice this rank should hold; no tensor is gathered;
//  - no two ranks hold identical weights for different experts (the rank-0
//    broadcast bug): "ranks 0 and 1 hold identical weights for experts 0-3:
//    rank 1's experts 4-7 equal rank 0's experts 0-3". Only the per-rank
//    hash lists are exchanged (all-gather over the cover group).
#include <cstdint>
#include <string>
#include <vector>

#include "harness/checks/check_context.h"

namespace moe::checks {

// ---- pure parts (unit-tested) ----------------------------------------------
// expertsPerRank[i]: the experts group member i holds; ranks[i]: its global
// rank; groupName: the group's name ("ep"). Returns "" when the sets
// partition [0, numExperts), else one sentence naming gaps ("experts 4-5 are
// held by no ep rank"), overlaps ("experts 0-3 are held by ranks 0 and 1") or
// out-of-range experts.
std::string describeCoverage(int64_t numExperts, const std::vector<std::vector<int64_t>>& expertsPerRank,
                             const std::vector<int>& ranks, const std::string& groupName = "ep");

// One rank's hashes of one expert tensor.
struct ExpertHashes {
  int rank = -1;                  // global rank
  std::vector<int64_t> experts;   // global expert index of each local row
  std::vector<int64_t> actual;    // hash of each local row
  std::vector<int64_t> expected;  // hash of its checkpoint expert (empty = unknown)
};
// Returns "" or one sentence naming ranks holding identical weights for
// different experts whose checkpoint experts differ (or are unknown).
std::string describeDuplicateWeights(const std::vector<ExpertHashes>& ranks);

// ---- the check ----------------------------------------------------------------
// Collective over mesh.world() (and the cover group). `shards` may include
// non-expert parameters; they are ignored. `checkpoint` may be null when
// options.compareCheckpoint is false.
CheckResult checkExpertUniqueness(mesh::DeviceMesh& mesh, const std::vector<ParamShard>& shards,
                                  const io::TensorSource* checkpoint,
                                  const ExpertCheckOptions& options = {});

// The mesh dims the expert tensors' placements split their expert dim over
// (ep, plus the expert-data-parallel dims under fsdp): the group whose ranks
// must hold disjoint experts covering all of them ("ep" when none does).
// The registered check uses them when the context's cover dims are empty.
std::vector<std::string> expertCoverDims(const std::vector<ParamShard>& shards, const mesh::DeviceMesh& mesh);

class ExpertUniquenessCheck : public Check {
 public:
  ExpertUniquenessCheck()
      : Check({"expert_uniqueness",
               "ep ranks hold disjoint expert sets covering all experts, each equal to its checkpoint "
               "expert (per-expert hashes, no gather)",
               CheckStage::kAfterLoad, 20, "mesh, params, checkpoint, expert options",
               "exact: per-expert FNV-1a hashes of the bytes"}) {}
  CheckResult run(const CheckContext& ctx) const override;
};

}  // namespace moe::checks
