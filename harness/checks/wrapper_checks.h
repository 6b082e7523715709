#pragma once
// Checks of a data-parallel wrapper (a ParamStore: "none", "fsdp", "zero3"),
// run by run-plan for every wrapper. Each has a pure part (unit-tested on
// planted wrong inputs) and a collective part over the world that agrees on
// one verdict:
//  - params_changed: every trainable parameter changed after step 1 (some
//    element on some rank); names the unchanged ones;
//  - wrapper_communication: the collectives the wrapper issued in one step
//    on its own groups ("<wrapper>:...") equal its analytical volume, per
//    (group, op) calls and bytes; the measured/expected byte ratio is reported;
//  - memory: the bytes the wrapper holds per rank (parameters, gradients,
//    AdamW state) against the replicated layout: the world-level factor
//    equals the expected one when given, and the parameter bytes equal what
//    the reported placements describe;
//  - gradient_scale: ||step-1 gradient|| / ||reference gradient|| per
//    parameter (each element counted once over the world) is 1 within a
//    tolerance: an expert gradient scaled by ep or 2 fails, whatever the
//    per-element tolerance would say.
#include <string>
#include <vector>

#include "harness/checks/check_context.h"

namespace moe::checks {

// ---- params_changed ---------------------------------------------------------
// names[i] changed on some rank iff changed[i]. Pure.
CheckResult describeParamsChanged(const std::vector<std::string>& names, const std::vector<bool>& changed);
// Collective over `world`. before/after: this rank's shards before and after
// step 1, the same names in the same order on every rank (shapes must match).
CheckResult checkParamsChanged(comm::Communicator& world, const std::vector<ParamShard>& before,
                               const std::vector<ParamShard>& after);

// ---- wrapper_communication -------------------------------------------------
// The counters of groups whose name starts with `prefix` ("fsdp:").
CommCounters countersWithPrefix(const CommCounters& counters, const std::string& prefix);
// Local: this rank's delta (already restricted to the wrapper's groups)
// against the wrapper's expectations; any other call on those groups fails.
// measured: the per-(group, op) table plus bytes_sent, expected_bytes_sent
// and ratio (measured/expected) summed over the (group, op)s.
CheckResult checkWrapperComm(int rank, const CommCounters& wrapperDelta,
                             const std::vector<CommExpectation>& expected);
// Collective over `world`: restricts `stepDelta` to "<wrapper>:" groups and
// runs the local check on every rank; reports rank 0's table and the world
// byte totals and ratio.
CheckResult checkWrapperCommCollective(comm::Communicator& world, const std::string& wrapper,
                                       const CommCounters& stepDelta, const std::vector<CommExpectation>& expected);

// ---- gather volume (fsdp) ---------------------------------------------------
// One parameter FSDP gathers on this rank: its plan-local tensor (what the
// gather rebuilds) and how the group's pieces of it split its dim 0.
struct GatheredParam {
  int64_t rows = 0;          // plan-local dim 0, the dim FSDP splits
  int64_t rowNumel = 1;      // elements per dim-0 row
  int64_t groupSize = 1;     // n: the ranks it is gathered over
  int64_t maxPieceRows = 0;  // the largest member's piece; every piece is padded to max(1, this)
};
struct GatherVolume {
  double unpaddedBytes = 0;  // sum of (n-1)/n x rows x rowNumel x elementBytes
  double paddedBytes = 0;    // sum of (n-1) x max(1, maxPieceRows) x rowNumel x elementBytes
  bool even = true;          // no padding: every piece is rows / n
};
// Pure: the all_gather bytes a rank sends for one gather of each parameter
// in a dtype of `elementBytes` (the gather dtype: 2 for bf16 parameters).
// Parameters with n = 1 are not gathered.
GatherVolume expectedGatherVolume(const std::vector<GatheredParam>& params, int64_t elementBytes);
// Pure: "" when the all_gather bytes a rank sent equal the padded volume
// exactly (byte counts are integers); else a sentence naming the rank, both
// values and the ratio to the unpadded volume.
std::string gatherVolumeFailure(int rank, double measured, const GatherVolume& expected);

// ---- memory ------------------------------------------------------------------
// MemoryInputs, MemoryCheckOptions: check_context.h (the context carries them).
// Pure: `ranks` are every rank's inputs (rank order).
CheckResult checkMemoryOf(const std::vector<MemoryInputs>& ranks, const MemoryCheckOptions& options = {});
// Collective over `world`: gathers every rank's inputs, then checkMemoryOf.
CheckResult checkMemory(comm::Communicator& world, const MemoryInputs& mine, const MemoryCheckOptions& options = {});

// ---- gradient_scale -----------------------------------------------------------
// GradScaleOptions: check_context.h.
struct GradNorm {
  std::string name;
  double run = 0;        // world norm of the run's gradient
  double reference = 0;  // norm of the reference gradient
};
// Pure: fails naming every parameter whose ratio run/reference is off.
CheckResult describeGradScale(const std::vector<GradNorm>& norms, const GradScaleOptions& options = {});
// Collective over mesh.world(): grads are this rank's step-1 gradient shards
// (placements describe what they hold); each element is counted once (the
// coordinate-0 rank of every mesh dim the placements leave unsharded).
// reference: full step-1 gradients by name.
CheckResult checkGradScale(mesh::DeviceMesh& mesh, const std::vector<ParamShard>& grads,
                           const io::TensorSource& reference, const GradScaleOptions& options = {});

}  // namespace moe::checks
