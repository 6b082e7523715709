#pragma once
// run-plan's result: the one typed contract between a conformance run and
// its readers. run-plan (run_plan.cpp, rank 0) writes it with toJson(); the
// suite runner (harness/suite/runner.cpp) and the mutation runner
// (harness/mutate/mutation_runner.cpp) read it with fromJson(). The JSON's
// field names and shapes are what reports and older documents use:
//   {"config", "mesh", "plan", "dtype", "load", "mutant" (null when none),
//    "seed", "world_size", "wrapper", "fsdp_experts", "device" (cpu | cuda),
//    "steps": [{"step", "loss", "reference_loss", "ce", "reference_ce", "aux",
//               "reference_aux", "grad_norm", "reference_grad_norm"}],
//    "checks": [{"check", "passed", "explanation", "measured"}],
//    "memory": {...}, "measured_memory": {...},
//    "step1_collectives_rank0": [{"group", "op", "calls", "bytes_sent", "bytes_recv"}],
//    "passed", "environment": {"torch_version", "backend", "git_revision", "host"},
//    "timings": {"reference_seconds", "reference_from_cache", "step_seconds", "total_seconds"}}
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness/checks/check.h"
#include "reference/train/step_record.h"

namespace moe::conformance {

// One step of the run next to the same step of the single-device reference
// (only loss, ce, aux and grad norm are serialised).
struct StepComparison {
  ref::StepRecord run;
  ref::StepRecord reference;
};

// Where rank 0's time went (issue 20 point 4), in seconds. The phases
// follow each other and do not overlap: spawn (the launcher's fork to
// run-plan's first line: exec, dynamic loading of libtorch, the command
// line), rendezvous (the store and the process group), load (config, plan,
// checkpoint scan, the loading path, the wrapper's set-up), reference (the
// single-device run or its cache), steps, checks (both stages, with their
// gathers). The runner adds report (reading the result into the report)
// and other (the rest of the job's wall time: exit, teardown, output).
struct RunTimings {
  double spawnSeconds = -1;  // < 0: unknown (not started by the harness's launcher)
  double rendezvousSeconds = 0;
  double loadSeconds = 0;
  double referenceSeconds = 0;
  bool referenceFromCache = false;
  std::vector<double> stepSeconds;
  double checksSeconds = 0;
  double totalSeconds = 0;
  // The "timings" object: the fields above, plus "phases" {spawn (only when
  // known), rendezvous, load, reference, steps, checks}.
  nlohmann::json toJson() const;
};

struct RunResult {
  std::string config;  // the config file
  std::string mesh;    // MeshShape::describe()
  std::string plan;    // the plan file
  std::string dtype;
  std::string load;
  std::string mutant;  // "" = none (null in JSON)
  uint64_t seed = 0;
  int worldSize = 0;
  std::string wrapper;
  std::string fsdpExperts;
  std::string device;  // the device lane the distributed run ran on: "cpu" | "cuda" ("" in older documents)
  std::vector<StepComparison> steps;
  std::vector<checks::CheckResult> checks;  // in report order (Check::order())
  bool passed = false;                      // every check passed
  // Views whose shapes the checks own: the memory check's inputs on rank 0
  // and the measured memory of every rank (measuredMemoryJson).
  nlohmann::json memory = nlohmann::json::object();
  nlohmann::json measuredMemory = nlohmann::json::object();
  nlohmann::json step1Collectives = nlohmann::json::array();  // rank 0's step-1 counters
  nlohmann::json environment = nlohmann::json::object();      // environmentJson()
  RunTimings timings;

  nlohmann::json toJson() const;
  // Fields a reader cannot do without (each check's "check" and "passed",
  // each step's "step", "loss" and "reference_loss") are required
  // (HarnessError naming the field); the others default. toJson() keeps
  // non-finite doubles as they are: write it with dumpJson
  // (common/json_number.h), which stores them as "nan" / "inf" / "-inf";
  // fromJson reads those strings back as the non-finite numbers.
  static RunResult fromJson(const nlohmann::json& j);
  // The check named `name`, or nullptr.
  const checks::CheckResult* check(const std::string& name) const;
};

// Where a run ran, as run results and reports record it: libtorch version,
// backend, git revision, host name, the compiler and build type of this
// binary, the CUDA version libtorch was built with ("none" for a CPU
// libtorch), and on a CUDA build the NCCL version libtorch carries, the CUDA
// driver version and the GPU model(s) ("none" without a driver or GPU).
nlohmann::json environmentJson(const std::string& backend, const std::string& gitRevision);

// The CUDA part of environmentJson: {"nccl", "cuda_driver", "gpus"}.
// Compiled from cuda_environment.cpp when libtorch has CUDA; otherwise
// every value is "not compiled".
nlohmann::json cudaEnvironmentJson();

}  // namespace moe::conformance
