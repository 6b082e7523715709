#pragma once
// The one result structure every report printer reads (report.json is its
// serialisation; printers never see how results were produced).
//
// A run's status:
//  - pass:  every requested check passed;
//  - fail:  the run finished and a requested check (or an expected placement)
//           failed; `reason` is the first failure's explanation;
//  - error: the run could not produce a verdict: a broken case file, a user
//           error of run-plan, a crashed or hung job (`reason` says which and
//           names the rank; `flightRecorder` points at the traces);
//  - skip:  not run on purpose (e.g. nccl without GPUs); `reason` says why.
#include <map>
#include <utility>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moe::reports {

enum class Status { kPass, kFail, kError, kSkip };
std::string statusName(Status s);          // "pass" | "fail" | "error" | "skip"
Status parseStatus(const std::string& s);  // HarnessError for anything else

struct CheckOutcome {
  std::string check;
  bool passed = false;
  bool requested = true;  // false: measured and shown, but not part of the verdict
  std::string explanation;
  nlohmann::json measured;
};

struct StepValues {
  int step = 0;
  double loss = 0, referenceLoss = 0;
  double ce = 0, referenceCe = 0;
  double aux = 0, referenceAux = 0;
  double gradNorm = 0, referenceGradNorm = 0;
};

struct RunResult {
  std::string id;
  std::string caseName;
  std::string caseFile;
  Status status = Status::kError;
  std::string reason;
  nlohmann::json spec = nlohmann::json::object();
  std::vector<StepValues> steps;
  double lossTolerance = 0;  // the |Δloss| band of the charts (0: unknown)
  std::vector<CheckOutcome> checks;
  nlohmann::json collectives = nlohmann::json::array();  // step-1 counters of rank 0
  nlohmann::json timings = nlohmann::json::object();     // run-plan's timings
  // run-plan's "measured_memory": per_rank at_step1/peak/after_last_step/
  // declared/replicated bytes and the world ratios (docs/measurements.md "Measured
  // memory"); empty when the run did not report it.
  nlohmann::json measuredMemory = nlohmann::json::object();
  double seconds = 0;                                     // wall time of the job
  nlohmann::json environment = nlohmann::json::object();
  std::string log;             // tail of the job's output on fail/error
  std::string flightRecorder;  // flight_recorder.json of a failed job, if any
  // Root-cause attribution of an `error` run whose job failed
  // (harness/launch/failure.h): {"primary": {"rank", "class", "error",
  // "time"}, "other_primary": [...], "secondary": [...]}; {} otherwise.
  nlohmann::json failure = nlohmann::json::object();
};

struct Totals {
  int pass = 0, fail = 0, error = 0, skip = 0;
  int total() const { return pass + fail + error + skip; }
};

struct Report {
  std::string created;  // UTC, ISO 8601
  nlohmann::json environment = nlohmann::json::object();  // torch_version, backend, git_revision, host
  nlohmann::json suite = nlohmann::json::object();        // command line, jobs, ...
  double seconds = 0;                                     // wall time of the suite
  std::vector<RunResult> runs;

  Totals totals() const;
};

nlohmann::json toJson(const RunResult& r);
nlohmann::json toJson(const Report& r);
RunResult runResultFromJson(const nlohmann::json& j);
Report reportFromJson(const nlohmann::json& j);
// Reads report.json (or a directory holding it). HarnessError naming the file.
Report readReport(const std::string& path);

// Where the time goes: the phases of a run in order (spawn, rendezvous,
// load, reference, steps, checks, report, other; harness/conformance/
// run_result.h defines each), and the sum of each over runs that have it
// (a run that ended in an error before its result has none).
const std::vector<std::string>& phaseNames();
struct PhaseTotals {
  std::vector<std::pair<std::string, double>> seconds;  // phaseNames() order, phases seen only
  int runs = 0;                                          // runs that reported phases
};
PhaseTotals phaseTotals(const Report& report);
// One run's phases as "spawn 0.12 s, rendezvous 0.05 s, ...", or "" without.
std::string phaseText(const RunResult& r);

// The environment in one line: "libtorch 2.15.0 (CUDA 13.2), NCCL 2.30.7,
// CUDA driver none, GPUs none; gcc 12.2.0, Release; backend gloo, git
// abc123, host h". Fields a report does not have are left out (older
// reports). The printers show it.
std::string environmentText(const nlohmann::json& environment);

// Margins: how much of each tolerance a run used (measured / tolerance; > 1
// fails). Keys: "loss" (max |Δloss| / loss_abs), "grads" and "params" (the
// worst tensor's score). Absent when the run has no parity result.
std::map<std::string, double> margins(const RunResult& r);

// A run's measured memory per rank (bytes of tensor storage, rank order) and
// the world ratios against the replicated layout's declaration. ranks() == 0
// when the run has none.
struct MeasuredMemorySummary {
  std::vector<double> peakBytes;       // max over the steps of the peak during a step
  std::vector<double> afterLastBytes;  // after the last step
  double measuredRatio = 0;            // sum(after last step) / sum(replicated declaration)
  double declaredRatio = 0;            // sum(wrapper declaration) / sum(replicated declaration)
  double peakRatio = 0;                // sum(peak) / sum(replicated declaration)
  size_t ranks() const { return peakBytes.size(); }
};
MeasuredMemorySummary measuredMemory(const RunResult& r);

}  // namespace moe::reports
