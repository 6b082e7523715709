#pragma once
// One conformance run (`moe-harness run-plan`): one plan on one mesh, inside
// a launched job: load, train, judge.
//
// Every rank: loads its shards of the initial weights straight from a
// checkpoint (the deterministic init of --seed, or --checkpoint), trains
// --steps steps with the distributed model, and runs every registered check
// that applies (Registry<Check>, harness/checks/check_registry.h) against
// the single-device reference of the same config, dtype and seed (computed
// once per cache key, or on every rank: an independent code path, cheap for
// the small models this is meant for). The run fills one CheckContext and
// names no check: the checks of the loaded state run right after loading,
// the others after the last step, and the verdicts are reported in the
// checks' order.
// Rank 0 prints one JSON document (run_result.h: per-step values, every
// check with its measured maxima); all ranks agree on the verdict and exit 1
// if any check failed.
#include <cstdint>
#include <string>
#include <vector>

#include "harness/checks/placement_expectation.h"

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
  // A checkpoint holding NaN or Inf is refused before any training (a user
  // error naming the file, the tensor, the first index and the count) unless
  // this is set; the run then fails the finite check.
  bool allowNonFiniteCheckpoint = false;
  std::string dumpShards;
  std::string load = "shard_on_read";  // parallel::loadPathNames()
  double commTimeout = 120;
  std::string backend = "gloo";
  // The device lane: where the distributed run's parameters, masters,
  // gradients, optimizer state, batches, routing and dispatch tensors live
  // and what the collectives take: "cpu" | "cuda"; "" = the backend's
  // default (gloo: cpu, nccl: cuda). The single-device reference stays on
  // the CPU; checks compare host copies. CUDA that cannot run, nccl with
  // cpu, or ranks given different backends or devices are HarnessErrors
  // before the first collective (comm::createWorld).
  std::string device;
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
  // Checkpoints (issue 19; parallel/dist_checkpoint.h, io/dist_checkpoint.h).
  // saveDir: after step saveAt (1 <= saveAt <= steps) the run writes a
  // distributed checkpoint there (parameters, AdamW moments and step, data
  // position) and keeps training; the checkpoint_complete check judges it.
  std::string saveDir;
  int64_t saveAt = 0;
  // "sharded" (io/dist_checkpoint.h: per-rank pieces) or "hf" (the
  // consolidated Hugging Face layout, parallel/hf_checkpoint.h: written by
  // rank 0 from a sharded staging copy DIR.sharded, removed once it is
  // converted). Either resumes with resumeDir.
  std::string saveFormat = "sharded";
  // resumeDir: start from that checkpoint (saved at step k by any mesh, plan
  // and wrapper) instead of --checkpoint/the init, and train steps
  // k+1..steps. The reference is the UNINTERRUPTED single-device run of the
  // saving run's seed; parity and resume_parity compare the steps run and
  // the state loaded at k with it. --load does not apply (the checkpoint is
  // read shard-on-read). A config, seed, batch or sequence length differing
  // from the checkpoint's is a HarnessError naming both values.
  std::string resumeDir;
  // With saveDir: right after saving, the same job resumes from the
  // checkpoint (a fresh trainer loads it with the plan's slices) and trains
  // on; resume_parity judges the state it loaded. A single-job save/resume,
  // for the mutation suite.
  bool resumeRoundtrip = false;
  // Remove saveDir after the run (rank 0): a per-job temporary checkpoint.
  bool removeSaveAfter = false;
  std::string mutant;  // recorded in the result; the caller activates it (harness/mutate)
  // A case's expected placements: judged by the expected_placements check
  // on the loaded shards (empty: that check does not apply).
  std::vector<checks::PlacementExpectation> expectedPlacements;
};

// Runs one conformance run in this rank (collective over the job: every
// rank calls it with the same options). Returns the exit code: 0 when
// every check passed, 1 otherwise (a loss, gradient or parameter that became
// non-finite fails the `finite` check: 1); throws HarnessError on bad input
// (a non-finite checkpoint included).
int runPlan(const RunPlanOptions& options);

}  // namespace moe::conformance
