#pragma once
// One conformance run (`moe-harness run-plan`): one plan on one mesh, inside
// a launched job: load, train, judge.
//
// Every rank: loads its shards of the initial weights straight from a
// checkpoint (the deterministic init of --seed, or --checkpoint), trains
// --steps steps with the distributed model, and runs the checks against the
// single-device reference of the same config, dtype and seed (computed on
// every rank: an independent code path, cheap for the small models this is
// meant for):
//  - placement and expert uniqueness on the loaded shards,
//  - parity of per-step loss/ce/aux/grad norm, step-1 gradients and the
//    final parameters,
//  - communication: the token dispatch volume equals tokens x top-k per MoE
//    layer, and the per-step collective counters are reported.
// Rank 0 prints one JSON document (per-step values, every check with its
// measured maxima); all ranks agree on the verdict and exit 1 if any check
// failed.
#include <cstdint>
#include <string>

namespace moe::conformance {

struct RunPlanOptions {
  std::string configPath;
  std::string mesh;
  std::string planPath;
  std::string dtype = "fp32";
  int64_t steps = 4;
  uint64_t seed = 0;
  int64_t batchSize = 4;
  int64_t seqLen = 16;
  std::string checkpoint;
  std::string dumpShards;
  std::string load = "shard_on_read";  // parallel::loadPathNames()
  double commTimeout = 120;
  std::string backend = "gloo";
  std::string resultJson;      // also write rank 0's JSON document here
  std::string tolerance;       // JSON (see parseTolerance); empty: the dtype's defaults
  std::string referenceCache;  // directory of cached single-device references
  // Data-parallel wrapper (issue 5): a ParamStore name, where fsdp puts
  // ep-sharded experts, and the memory factor vs the replicated layout the
  // run must reach (0 = reported only).
  std::string wrapper = "none";
  std::string fsdpExperts = "edp";
  double expectMemoryFactor = 0;
  // measured_memory: undeclared bytes after a step fail the check unless
  // allowed (every wrapper holds exactly its declaration, docs/measurements.md "Measured memory").
  bool allowUnaccountedMemory = false;
  std::string mutant;  // recorded in the result; the caller activates it (harness/mutate)
};

// Runs one conformance run in this rank (collective over the job: every
// rank calls it with the same options). Returns the exit code: 0 when
// every check passed, 1 otherwise; throws HarnessError on bad input.
int runPlan(const RunPlanOptions& options);

}  // namespace moe::conformance
