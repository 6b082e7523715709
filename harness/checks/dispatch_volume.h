#pragma once
// The token dispatch volume, part of the communication check: per step the ep
// ranks must dispatch tokens x top-k rows per MoE layer in total (dropless
// expert parallelism). tp ranks of one data-parallel slice see the same
// tokens and each dispatches them, unless sequence parallelism splits them
// over tp. Its bytes follow the routing, so the per-op all_to_all bytes are
// not predicted; the row count is exact.
#include <cstdint>

#include "harness/checks/check_context.h"

namespace moe::checks {

struct DispatchExpectation {
  int64_t rows = 0;      // world total per step; 0 without an ep dispatch over more than one rank
  int64_t tpCopies = 1;  // how many tp ranks dispatch the same tokens (1 under sequence parallelism)
};
// Pure: from the plan's module communication, the mesh and the model.
// globalTokens: batch x sequence length of the global batch.
DispatchExpectation expectedDispatch(const plan::AppliedPlan& plan, const mesh::MeshShape& mesh,
                                     const ref::ModelConfig& config, int64_t globalTokens);
// Pure: the verdict (check "communication") for the world total `measured`:
//   "dispatch volume 96 rows, expected 128 (tokens x top-k x MoE layers): 32
//    routed rows were never dispatched"
// measured: {"dispatched_rows", "expected_rows"}.
CheckResult describeDispatchVolume(int64_t measured, const DispatchExpectation& expected);
// Collective over `world`: sums every rank's dispatched rows, then the above.
CheckResult checkDispatchVolume(comm::Communicator& world, int64_t sentRows, const DispatchExpectation& expected);

}  // namespace moe::checks
