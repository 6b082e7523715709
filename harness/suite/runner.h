#pragma once
// The case runner: every run of a suite in its own launched job of
// `moe-harness run-plan` (ranks forked from the fork server or exec'd,
// RunnerOptions::spawn; each its own process, so a crashed, hung or aborted
// run cannot take the runner down), results collected into one Report.
//
// Contract:
//  - A broken case file becomes one `error` run (id = its name) with its
//    reason; the other cases still run.
//  - A run whose job crashes, hangs (timeout) or stops with a user error
//    becomes `error` with the launcher's explanation (which rank, how it
//    ended, its last collective) and the path of flight_recorder.json.
//  - A run that finished is `pass` when every requested check passed and
//    every expected placement matched, else `fail`.
//  - runs on the CUDA lane (nccl, or --device cuda) without usable GPUs are
//    `skip` with the reason (nccl: one GPU per rank; gloo: one GPU shared);
//    nccl with device cpu is `error` (a user error naming both).
//  - The single-device reference of each (config, dtype, seed, steps, batch,
//    sequence length, checkpoint) is computed once per cache directory
//    (run-plan --reference-cache).
//  - The returned report's suite section says "complete": true and
//    "finished_runs"; partial reports (onRunFinished) say false.
//  - Progress goes to `progress`: "run i/n ID: step s/N" while a run trains,
//    one line per result as it finishes, and the totals with every run's time.
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "harness/launch/launcher.h"
#include "harness/suite/case_file.h"
#include "reports/report.h"

namespace moe::cases {

struct RunnerOptions {
  std::string harnessBinary;   // moe-harness to exec; "" = this process's binary
  int jobs = 1;                // concurrent jobs
  std::string backend;         // "" = each case's; "gloo" / "nccl" override
  std::string device;          // "" = each case's (or its backend's default); "cpu" / "cuda" override
  std::string workDir;         // per-run files (config, plan, result, output); "" = a temp dir, removed after
  std::string referenceCache;  // "" = <workDir>/reference-cache
  std::string iface;           // launch::LaunchOptions::iface of every job ("" = loopback)
  // launch::LaunchOptions::spawn of every job: kFork forks the ranks from the
  // fork server when it serves harnessBinary (it runs in `moe-harness run`),
  // else they exec; the report's suite section says which ("spawn").
  launch::SpawnMode spawn = launch::SpawnMode::kFork;
  std::ostream* progress = nullptr;  // nullptr: std::cerr
  nlohmann::json selection = nlohmann::json::object();  // recorded in the report's suite section
  // Called after each run finishes (one call at a time, from a worker
  // thread) with the report of the runs finished so far, in suite order,
  // suite.complete = false: `run` writes report.json from it, so a killed
  // suite leaves a valid report of what finished. Exceptions it throws are
  // reported on `progress` and do not stop the suite.
  std::function<void(const reports::Report&)> onRunFinished;
};

// The default number of concurrent jobs of `run`: twice the cores this
// process may use (sched_getaffinity), at most 64. A run spends most of its
// wall time waiting in collectives (gloo over loopback), not computing, so
// more jobs than cores finish the suite sooner: the default suite took
// 62.3 s with 1 job, 36.7 s with 2, 31.2 s with 3 and 23.6 s with 4 on 2
// cores (docs/measurements.md, issue 20).
int defaultRunJobs();

// One item of a suite: a run to do, or a case that could not be loaded.
struct SuiteItem {
  const RunSpec* run = nullptr;
  const CaseFile* brokenCase = nullptr;
};

reports::Report runSuite(const std::vector<SuiteItem>& items, const RunnerOptions& options);

// The git revision of the source tree ("unknown" outside a repository).
std::string gitRevision();
// The environment of this machine: conformance::environmentJson(backend,
// gitRevision()) (harness/conformance/run_result.h).

}  // namespace moe::cases
