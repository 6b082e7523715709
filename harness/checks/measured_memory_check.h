#pragma once
// The measured_memory check: what a data-parallel wrapper REALLY holds per
// rank, counted by the CPU allocation tracker (common/alloc_tracker.h),
// against what it declares (ParamStore::memory() + the AdamW state) and
// against the replicated layout's declaration.
//
// Inputs per rank (bytes of libtorch CPU tensor storage, each the live bytes
// of the moment minus the live bytes just before loading, minus the copies
// the harness itself keeps for its checks):
//  - atStep1: at the start of step 1 (after loading: the parameters and
//    whatever the wrapper allocates up front);
//  - stepPeaks[s-1]: the peak during step s (parameters, gathered compute
//    copies, activations, autograd buffers, gradients, optimizer state);
//  - afterLast: after the last step (the steady state between steps:
//    parameters, gradients, optimizer state, and anything not released).
//
// Verdict (every rank gets the same one; a failure names the rank and both
// values):
//  - always: afterLast >= declaredBytes. The declared tensors exist and were
//    allocated after the tracker was installed, so counting less means the
//    declaration overstates or the tracker does not see the allocations;
//  - always: afterLast <= stepPeaks.back() (the state after the last step was
//    live inside its window, so the window's peak covers it);
//  - assertAccounted: afterLast <= declaredBytes + allowanceBytes. Off: bytes
//    beyond the allowance are reported (measured "unaccounted_bytes") but do
//    not fail. run-plan turns it on (`--allow-unaccounted-memory` turns it
//    off): every wrapper holds exactly its declaration (docs/measurements.md "Measured
//    memory").
// Reported: per rank every input; over the world the measured ratio
// sum(afterLast) / sum(replicatedBytes) next to the declared ratio
// sum(declaredBytes) / sum(replicatedBytes), and the peak ratio
// sum(max step peak) / sum(replicatedBytes).
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness/checks/check.h"
#include "harness/comm/communicator.h"

namespace moe::checks {

struct MeasuredMemory {
  int64_t atStep1 = 0;
  std::vector<int64_t> stepPeaks;  // index s-1: step s
  int64_t afterLast = 0;
  // The wrapper's declaration: fp32 masters + gradients + AdamW moments.
  int64_t declaredBytes = 0;
  // The replicated layout's declaration on this rank (16 B per plan-local
  // element: master, gradient, two moments).
  int64_t replicatedBytes = 0;
  // Bytes that may be live after a step beyond the declaration (derived by
  // the caller, see run_plan_memory.h).
  int64_t allowanceBytes = 0;
};

struct MeasuredMemoryOptions {
  bool assertAccounted = false;  // fail when afterLast > declaredBytes + allowanceBytes
};

// Pure: `ranks` are every rank's inputs in rank order.
CheckResult checkMeasuredMemoryOf(const std::vector<MeasuredMemory>& ranks,
                                  const MeasuredMemoryOptions& options = {});
// Collective over `world`: every rank's inputs in rank order.
std::vector<MeasuredMemory> gatherMeasuredMemory(comm::Communicator& world, const MeasuredMemory& mine);
// Per rank: at_step1_bytes, step_peak_bytes, peak_bytes (max over steps),
// after_last_step_bytes, declared_bytes, replicated_bytes, allowance_bytes.
nlohmann::json measuredMemoryJson(const std::vector<MeasuredMemory>& ranks);

}  // namespace moe::checks
