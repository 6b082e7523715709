#pragma once
// The expected_placements check: a case's expect.placements
// (placement_expectation.h) against the parameters each rank holds after
// loading: for every expectation and every rank it names (all ranks when it
// names none), the parameter is among the rank's, its placements equal the
// expected ones (normalised: Shard(-1) and Shard(2) of a 3-d tensor are the
// same) and its local shape is the expected one. The first failure in the
// case's order (expectation, then rank) is the verdict:
//   "rank 1: model.layers.1.mlp.experts.gate_up_proj placements [Shard(0)]
//    vs expected [Replicate()]"
// run-plan runs it when it is given expectations (--expect-placements; the
// suite passes a case's); it reads the loaded shards in the rank itself, so
// nothing is dumped to files.
#include <string>
#include <vector>

#include "harness/checks/check_context.h"

namespace moe::checks {

// Local: for each expectation, this rank's failure ("" when it passes or
// does not name this rank).
std::vector<std::string> expectedPlacementFailures(int rank, const std::vector<ParamShard>& shards,
                                                   const std::vector<PlacementExpectation>& expectations);
// Pure: the verdict from every rank's failures (failuresPerRank[r]: rank r's
// expectedPlacementFailures). measured on success: {"compared": (parameter,
// rank) pairs}.
CheckResult describeExpectedPlacements(const std::vector<PlacementExpectation>& expectations,
                                       const std::vector<std::vector<std::string>>& failuresPerRank);

}  // namespace moe::checks
