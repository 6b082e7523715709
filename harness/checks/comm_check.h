#pragma once
// The communication check: the collectives a rank ran in one measured window
// (usually one training step) against what the plan implies, per
// (group, op): the number of calls and, when given, the logical bytes
// (flight_recorder.h's ring-algorithm bytes).
//   "rank 0: extra collective: 2 all_reduce calls on group tp, expected 1"
//   "rank 0: 1 all_gather call on group world, expected none"
//   "rank 1: all_to_all on group ep sent 4096 bytes, expected 2048 (measured/expected 2.000)"
// Expectations may differ per rank (e.g. all_to_all bytes follow routing).
#include <string>
#include <vector>

#include "harness/checks/check_context.h"

namespace moe::checks {

// The process's counters now (FlightRecorder::instance().counters()).
CommCounters snapshotCounters();
// after - before per (group, op); entries with no calls are dropped.
CommCounters counterDelta(const CommCounters& before, const CommCounters& after);

// Counts what runs between construction and delta().
class CommWindow {
 public:
  CommWindow() : before_(snapshotCounters()) {}
  CommCounters delta() const { return counterDelta(before_, snapshotCounters()); }

 private:
  CommCounters before_;
};

using comm::ringBytesSent;  // harness/comm/flight_recorder.h


// Local: this rank's window against its expectations (no communication).
CheckResult checkCommunication(int rank, const CommCounters& delta, const std::vector<CommExpectation>& expected,
                               const CommCheckOptions& options = {});
// Collective over `world`: the local check on every rank, then one verdict.
CheckResult checkCommunicationCollective(comm::Communicator& world, const CommCounters& delta,
                                         const std::vector<CommExpectation>& expected,
                                         const CommCheckOptions& options = {});

class CommunicationCheck : public Check {
 public:
  CommunicationCheck()
      : Check({"communication",
               "collective calls and logical bytes per (group, op) in step 1 equal what the plan implies, and the "
               "token dispatch volume equals tokens x top-k x MoE layers",
               CheckStage::kAfterStep1, 50, "mesh, plan, config, commDelta, commExpected, dispatch",
               "exact: calls and bytes per (group, op) from the plan (all_to_all bytes follow the routing and are "
               "not predicted), dispatched rows from the model and the batch"}) {}
  CheckResult run(const CheckContext& ctx) const override;
};

}  // namespace moe::checks
