#pragma once
// The mutation suite's plain data and runner (issue 7). The harness knows a
// mutant only by name, description, where it is injected (text), the check
// meant to kill it and the run-plan jobs that exercise it; the bug itself
// lives under reference/mutants/ (the harness never sees model internals).
//
// runMutations() runs, as launched jobs of `PROGRAM run-plan ARGS`:
//  - every distinct configuration WITHOUT a mutant (the baseline: must pass);
//  - every configuration of every mutant with `--mutant NAME`,
// and classifies each mutant:
//  - killed:      the intended check failed in some configuration (other
//                 checks may have failed too; they are listed);
//  - wrong_check: checks failed, but never the intended one;
//  - crashed / timeout: the job produced no verdict (a desync counts as a
//                 kill only when the intended check is "desync");
//  - survived:    every configuration passed.
// Mutation score = killed / total. The suite is green when every mutant is
// killed by its intended check and every baseline configuration passes.
//
// JSON shape (mutationJson), the `mutation` table of a report:
// {"mutation": {
//    "score": 1.0, "killed": 10, "total": 10, "baseline_passed": true,
//    "passed": true, "seconds": 80.1, "jobs": 1,
//    "mutants": [{"name", "description", "injection_point", "intended_check",
//                 "status": "killed|wrong_check|survived|crashed|timeout",
//                 "killed_by": "parity" | null, "message": "...",
//                 "failed_checks": ["placement", ...], "seconds": 6.2,
//                 "runs": [RUN, ...]}],
//    "baseline": [RUN, ...]}}
// RUN = {"id", "nranks", "args": [...], "mutant": "name" | null,
//        "exit_code", "seconds", "timed_out", "verdict": bool | null,
//        "checks": [{"check", "passed", "explanation"}], "error": "..."}
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness/launch/launcher.h"

namespace moe::mutate {

// One run-plan job. `{cases}` in an argument is replaced by the cases
// directory (MutateOptions::casesDir).
struct MutationRunSpec {
  std::string id;  // "ep2", "tp2_moe_tp", ...: names the configuration
  int nranks = 2;
  std::vector<std::string> args;  // run-plan arguments (no --mutant)
};

struct MutantSpec {
  std::string name;            // "a2a_split_off_by_one"
  std::string description;     // the bug, one sentence
  std::string injectionPoint;  // "reference/parallel/ep_dispatch.cpp: ..."
  std::string intendedCheck;   // "placement" | "expert_uniqueness" | "parity" | "communication" | "desync"
  std::vector<MutationRunSpec> runs;
};

struct RunOutcome {
  MutationRunSpec spec;
  std::string mutant;  // "" = baseline
  int exitCode = 0;
  bool timedOut = false;
  double seconds = 0;
  std::optional<bool> verdict;  // run-plan's "passed"; none = no JSON
  std::vector<std::pair<std::string, bool>> checks;  // (check, passed)
  std::map<std::string, std::string> explanations;   // check -> explanation
  std::string error;  // no verdict: the launcher's summary / last stderr lines
};

struct MutantOutcome {
  MutantSpec spec;
  std::string status;  // killed | wrong_check | survived | crashed | timeout
  std::string killedBy;
  std::string message;
  std::vector<std::string> failedChecks;
  double seconds = 0;
  std::vector<RunOutcome> runs;
};

struct MutationReport {
  std::vector<MutantOutcome> mutants;
  std::vector<RunOutcome> baseline;
  double seconds = 0;
  int jobs = 1;
  int killed() const;
  double score() const;  // killed / total (1 when there are none)
  bool baselinePassed() const;
  bool passed() const;  // every mutant killed by its intended check, baseline green
};

struct MutateOptions {
  std::string program;   // the moe-harness binary (run-plan)
  std::string casesDir;  // replaces {cases}
  int jobs = 1;          // concurrent launched jobs
  // launch::LaunchOptions::spawn of every job (forked from the fork server
  // when it serves `program`, else exec'd).
  launch::SpawnMode spawn = launch::SpawnMode::kFork;
  double timeoutSeconds = 240;  // per job
  bool baseline = true;  // run the unmutated configurations
  std::ostream* progress = nullptr;  // one line per finished job
};

// Pure: the verdict of one mutant from its runs (see the header comment).
void classify(MutantOutcome& m);

// Runs the baseline and every mutant's configurations (see above).
MutationReport runMutations(const std::vector<MutantSpec>& mutants, const MutateOptions& options);

nlohmann::json mutationJson(const MutationReport& report);
// The readable table: mutant, configuration, status, killing check, message.
void printMutationTable(std::ostream& os, const MutationReport& report);

}  // namespace moe::mutate
