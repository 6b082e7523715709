#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iomanip>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "harness/conformance/run_result.h"
#include "harness/launch/launcher.h"
#include "harness/mutate/mutation.h"

namespace moe::mutate {

int MutationReport::killed() const {
  int n = 0;
  for (const auto& m : mutants) n += m.status == "killed";
  return n;
}

double MutationReport::score() const {
  return mutants.empty() ? 1.0 : static_cast<double>(killed()) / static_cast<double>(mutants.size());
}

bool MutationReport::baselinePassed() const {
  for (const auto& b : baseline)
    if (!b.verdict || !*b.verdict) return false;
  return true;
}

bool MutationReport::passed() const { return baselinePassed() && killed() == static_cast<int>(mutants.size()); }

namespace {

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

// The failed checks of a run, in run-plan's order.
std::vector<std::string> failedChecks(const RunOutcome& r) {
  std::vector<std::string> out;
  for (const auto& [name, ok] : r.checks)
    if (!ok) out.push_back(name);
  return out;
}

// The communicator's fingerprint check failed (launcher summary with the
// per-rank traces): ranks issued different collectives. A rank that merely
// died also shows a "divergence" line, so only the mismatch counts.
// Both detections of ranks issuing different collectives: the fingerprint
// exchange (same group, different calls) and the launcher's desync watchdog
// (ranks blocked in calls on different groups).
bool isDesync(const RunOutcome& r) {
  return r.error.find("collective mismatch") != std::string::npos ||
         r.error.find("collective desync") != std::string::npos;
}

// run-plan's JSON (conformance::RunResult) from rank 0's prefixed stdout: the lines from the first
// "{" line to the matching last "}" line.
std::optional<nlohmann::json> rank0Json(const std::string& out) {
  const std::string prefix = "[rank 0] ";
  std::istringstream in(out);
  std::string line, text;
  bool inJson = false;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    line = line.substr(prefix.size());
    if (!inJson && line == "{") inJson = true;
    if (inJson) text += line + "\n";
    if (inJson && line == "}") break;
  }
  if (text.empty()) return std::nullopt;
  try {
    return nlohmann::json::parse(text);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string lastLines(const std::string& s, size_t n) {
  std::vector<std::string> lines;
  std::istringstream in(s);
  std::string l;
  while (std::getline(in, l))
    if (!l.empty()) lines.push_back(l);
  const size_t from = lines.size() > n ? lines.size() - n : 0;
  return join(std::vector<std::string>(lines.begin() + static_cast<std::ptrdiff_t>(from), lines.end()), "\n");
}

std::string substituteCases(const std::string& arg, const std::string& casesDir) {
  const std::string key = "{cases}";
  auto pos = arg.find(key);
  return pos == std::string::npos ? arg : arg.substr(0, pos) + casesDir + arg.substr(pos + key.size());
}

RunOutcome runOne(const MutationRunSpec& spec, const std::string& mutant, const MutateOptions& o) {
  RunOutcome r;
  r.spec = spec;
  r.mutant = mutant;
  std::vector<std::string> argv = {o.program, "run-plan"};
  for (const auto& a : spec.args) argv.push_back(substituteCases(a, o.casesDir));
  if (!mutant.empty()) {
    argv.push_back("--mutant");
    argv.push_back(mutant);
  }
  std::ostringstream out, err;
  launch::LaunchOptions lo;
  lo.nranks = spec.nranks;
  lo.timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeoutSeconds * 1000));
  lo.out = &out;
  lo.err = &err;
  lo.quiet = true;
  lo.spawn = o.spawn;
  const auto t0 = std::chrono::steady_clock::now();
  launch::LaunchResult lr = launch::launchProgram(lo, argv);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.exitCode = lr.exitCode();
  r.timedOut = lr.timedOut;
  std::optional<conformance::RunResult> result;
  if (auto j = rank0Json(out.str())) {
    try {
      result = conformance::RunResult::fromJson(*j);
    } catch (const HarnessError&) {
      // not run-plan's document: no verdict
    }
  }
  if (result) {
    r.verdict = result->passed;
    for (const auto& c : result->checks) {
      r.checks.push_back({c.check, c.passed});
      r.explanations[c.check] = c.explanation;
    }
  } else {
    r.error = lr.summary.empty() ? lastLines(err.str(), 6) : lr.summary + "\n" + lastLines(err.str(), 4);
  }
  return r;
}

std::string describeRun(const RunOutcome& r) {
  std::ostringstream os;
  os << (r.mutant.empty() ? "baseline" : r.mutant) << " @ " << r.spec.id << " (" << r.spec.nranks << " ranks): ";
  if (r.verdict) {
    auto failed = failedChecks(r);
    os << (failed.empty() ? "all checks pass" : "failed " + join(failed, ", "));
  } else {
    os << (r.timedOut ? "timeout" : moe::str("no verdict, exit ", r.exitCode));
  }
  os << std::fixed << std::setprecision(1) << " [" << r.seconds << " s]";
  return os.str();
}

}  // namespace

void classify(MutantOutcome& m) {
  m.status = "survived";
  m.killedBy.clear();
  m.message.clear();
  m.failedChecks.clear();
  std::set<std::string> failed;
  const std::string& want = m.spec.intendedCheck;
  std::string wrongMessage, crashMessage, crashStatus;
  for (const auto& r : m.runs) {
    for (const auto& c : failedChecks(r)) failed.insert(c);
    if (r.verdict) {
      auto f = failedChecks(r);
      if (std::find(f.begin(), f.end(), want) != f.end()) {
        if (m.status != "killed") {
          m.status = "killed";
          m.killedBy = want;
          m.message = r.explanations.at(want);
        }
      } else if (!f.empty() && wrongMessage.empty()) {
        wrongMessage = f.front() + ": " + r.explanations.at(f.front());
      }
    } else if (want == "desync" && !r.timedOut && isDesync(r)) {
      if (m.status != "killed") {
        m.status = "killed";
        m.killedBy = "desync";
        m.message = r.error;
      }
    } else if (crashStatus.empty()) {
      crashStatus = r.timedOut ? "timeout" : "crashed";
      crashMessage = r.error;
    }
  }
  m.failedChecks.assign(failed.begin(), failed.end());
  if (m.status == "killed") return;
  if (!wrongMessage.empty()) {
    m.status = "wrong_check";
    m.message = wrongMessage;
  } else if (!crashStatus.empty()) {
    m.status = crashStatus;
    m.message = crashMessage;
  }
}

MutationReport runMutations(const std::vector<MutantSpec>& mutants, const MutateOptions& o) {
  if (o.program.empty()) fail("mutate: no program to run run-plan with");
  const auto t0 = std::chrono::steady_clock::now();
  // The job list: distinct baseline configurations first, then each
  // mutant's configurations.
  struct Job {
    MutationRunSpec spec;
    std::string mutant;
    size_t mutantIndex;  // npos: baseline
  };
  std::vector<Job> jobs;
  if (o.baseline) {
    std::set<std::pair<int, std::vector<std::string>>> seen;
    for (const auto& m : mutants)
      for (const auto& r : m.runs)
        if (seen.insert({r.nranks, r.args}).second) jobs.push_back({r, "", std::string::npos});
  }
  for (size_t i = 0; i < mutants.size(); ++i)
    for (const auto& r : mutants[i].runs) jobs.push_back({r, mutants[i].name, i});

  std::vector<RunOutcome> outcomes(jobs.size());
  std::atomic<size_t> next{0};
  std::mutex printMutex;
  size_t done = 0;
  auto worker = [&] {
    for (size_t j; (j = next++) < jobs.size();) {
      outcomes[j] = runOne(jobs[j].spec, jobs[j].mutant, o);
      std::lock_guard<std::mutex> lock(printMutex);
      ++done;
      if (o.progress)
        *o.progress << "[" << done << "/" << jobs.size() << "] " << describeRun(outcomes[j]) << std::endl;
    }
  };
  const int nthreads = std::max(1, std::min<int>(o.jobs, static_cast<int>(jobs.size())));
  if (nthreads == 1) {
    worker();
  } else {
    std::vector<std::thread> threads;
    for (int t = 0; t < nthreads; ++t) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
  }

  MutationReport report;
  report.jobs = nthreads;
  for (const auto& m : mutants) report.mutants.push_back({m, "", "", "", {}, 0, {}});
  for (size_t j = 0; j < jobs.size(); ++j) {
    if (jobs[j].mutantIndex == std::string::npos) {
      report.baseline.push_back(outcomes[j]);
    } else {
      auto& m = report.mutants[jobs[j].mutantIndex];
      m.seconds += outcomes[j].seconds;
      m.runs.push_back(outcomes[j]);
    }
  }
  for (auto& m : report.mutants) classify(m);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

namespace {

nlohmann::json runJson(const RunOutcome& r) {
  nlohmann::json checks = nlohmann::json::array();
  for (const auto& [name, ok] : r.checks)
    checks.push_back({{"check", name}, {"passed", ok}, {"explanation", r.explanations.at(name)}});
  nlohmann::json j = {{"id", r.spec.id},
                      {"nranks", r.spec.nranks},
                      {"args", r.spec.args},
                      {"mutant", r.mutant.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.mutant)},
                      {"exit_code", r.exitCode},
                      {"seconds", r.seconds},
                      {"timed_out", r.timedOut},
                      {"verdict", r.verdict ? nlohmann::json(*r.verdict) : nlohmann::json(nullptr)},
                      {"checks", checks}};
  if (!r.error.empty()) j["error"] = r.error;
  return j;
}

}  // namespace

nlohmann::json mutationJson(const MutationReport& report) {
  nlohmann::json mutants = nlohmann::json::array(), baseline = nlohmann::json::array();
  for (const auto& m : report.mutants) {
    nlohmann::json runs = nlohmann::json::array();
    for (const auto& r : m.runs) runs.push_back(runJson(r));
    mutants.push_back({{"name", m.spec.name},
                       {"description", m.spec.description},
                       {"injection_point", m.spec.injectionPoint},
                       {"intended_check", m.spec.intendedCheck},
                       {"status", m.status},
                       {"killed_by", m.killedBy.empty() ? nlohmann::json(nullptr) : nlohmann::json(m.killedBy)},
                       {"message", m.message},
                       {"failed_checks", m.failedChecks},
                       {"seconds", m.seconds},
                       {"runs", runs}});
  }
  for (const auto& r : report.baseline) baseline.push_back(runJson(r));
  return {{"mutation",
           {{"score", report.score()},
            {"killed", report.killed()},
            {"total", report.mutants.size()},
            {"baseline_passed", report.baselinePassed()},
            {"passed", report.passed()},
            {"seconds", report.seconds},
            {"jobs", report.jobs},
            {"mutants", mutants},
            {"baseline", baseline}}}};
}

void printMutationTable(std::ostream& os, const MutationReport& report) {
  size_t wName = 6, wCfg = 6;
  for (const auto& m : report.mutants) {
    wName = std::max(wName, m.spec.name.size());
    std::string cfg;
    for (const auto& r : m.runs) cfg += (cfg.empty() ? "" : ",") + r.spec.id;
    wCfg = std::max(wCfg, cfg.size());
  }
  auto pad = [](const std::string& s, size_t w) { return s + std::string(w > s.size() ? w - s.size() : 0, ' '); };
  os << pad("mutant", wName) << "  " << pad("config", wCfg) << "  " << pad("status", 11) << "  "
     << pad("killed by", 17) << "  " << pad("time", 7) << "  message\n";
  for (const auto& m : report.mutants) {
    std::string cfg;
    for (const auto& r : m.runs) cfg += (cfg.empty() ? "" : ",") + r.spec.id;
    char t[32];
    std::snprintf(t, sizeof t, "%.1f s", m.seconds);
    std::string msg = m.message.substr(0, m.message.find('\n'));
    os << pad(m.spec.name, wName) << "  " << pad(cfg, wCfg) << "  " << pad(m.status, 11) << "  "
       << pad(m.killedBy.empty() ? "-" : m.killedBy, 17) << "  " << pad(t, 7) << "  " << msg;
    if (m.status == "killed" && m.failedChecks.size() > 1) {
      std::vector<std::string> others;
      for (const auto& c : m.failedChecks)
        if (c != m.killedBy) others.push_back(c);
      os << "  [also failed: " << join(others, ", ") << "]";
    }
    os << "\n";
  }
  for (const auto& b : report.baseline) {
    char t[32];
    std::snprintf(t, sizeof t, "%.1f s", b.seconds);
    os << pad("(none)", wName) << "  " << pad(b.spec.id, wCfg) << "  "
       << pad(b.verdict && *b.verdict ? "green" : "RED", 11) << "  " << pad("-", 17) << "  " << pad(t, 7) << "  "
       << (b.verdict && *b.verdict ? "unmutated run passes every check"
                                   : (b.verdict ? "unmutated run fails: " + join(failedChecks(b), ", ")
                                                : b.error.substr(0, b.error.find('\n'))))
       << "\n";
  }
  char line[200];
  std::snprintf(line, sizeof line, "mutation score %d/%zu = %.0f%%, baseline %s, %.1f s with %d job(s)\n",
                report.killed(), report.mutants.size(), 100 * report.score(),
                report.baselinePassed() ? "green" : "RED", report.seconds, report.jobs);
  os << line;
}

}  // namespace moe::mutate
