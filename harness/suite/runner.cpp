#include "harness/suite/runner.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <regex>
#include <streambuf>
#include <thread>

#include "harness/checks/placement_expectation.h"
#include "harness/comm/factory.h"
#include "harness/conformance/run_result.h"
#include "common/error.h"
#include "common/gpu_requirement.h"
#include "harness/launch/fork_server.h"
#include "harness/launch/launcher.h"
#include "reports/printer.h"

namespace moe::cases {
namespace fs = std::filesystem;
using reports::CheckOutcome;
using reports::RunResult;
using reports::Status;

namespace {

// An ostream target that hands every complete line to a callback (the
// launcher writes each rank's prefixed lines through it).
class LineBuf : public std::streambuf {
 public:
  explicit LineBuf(std::function<void(const std::string&)> onLine) : onLine_(std::move(onLine)) {}
  ~LineBuf() override {
    if (!line_.empty()) onLine_(line_);
  }

 protected:
  int overflow(int c) override {
    if (c == EOF) return 0;
    put(static_cast<char>(c));
    return c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    for (std::streamsize i = 0; i < n; ++i) put(s[i]);
    return n;
  }

 private:
  void put(char c) {
    if (c == '\n') {
      onLine_(line_);
      line_.clear();
    } else {
      line_ += c;
    }
  }
  std::function<void(const std::string&)> onLine_;
  std::string line_;
};

std::string selfBinary() {
  std::error_code ec;
  const auto p = fs::read_symlink("/proc/self/exe", ec);
  if (ec) fail("cannot find the moe-harness binary (/proc/self/exe): ", ec.message());
  return p.string();
}

// ISO 8601 UTC with milliseconds: `trend` orders reports by it, and with
// forked ranks a whole suite can finish within one second, so whole seconds
// left consecutive reports tied (and ordered by argument position instead).
std::string nowUtc() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", std::gmtime(&t));
  char out[48];
  std::snprintf(out, sizeof(out), "%s.%03dZ", buf, static_cast<int>(ms));
  return out;
}

std::string lastLines(const std::deque<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

// The message of a run-plan user error ("moe-harness: error: ..."), if any;
// for ranks that left no failure record (a program other than moe-harness).
std::string userErrorOf(const std::deque<std::string>& lines) {
  for (const auto& l : lines) {
    const auto p = l.find("moe-harness: error: ");
    if (p != std::string::npos) return l.substr(p + 20);
    const auto q = l.find("moe-harness: internal error: ");
    if (q != std::string::npos) return "internal error: " + l.substr(q + 29);
  }
  // CLI11 errors (e.g. an option this run-plan does not know yet).
  for (const auto& l : lines)
    if (l.find("The following argument") != std::string::npos || l.find("was not expected") != std::string::npos ||
        l.find("is required") != std::string::npos)
      return "run-plan rejected its command line: " + l.substr(l.find(']') == std::string::npos ? 0 : l.find(']') + 2);
  return "";
}

// The runner's phases next to run-plan's (conformance/run_result.h,
// RunTimings): report, reading the result into this run's record, and
// other, the job's wall time that no phase accounts for (process exit,
// teardown, the launcher's output handling, ranks other than rank 0
// finishing later). `wallSeconds` is the job's wall time.
void addRunnerPhases(RunResult& r, double wallSeconds, double reportSeconds) {
  nlohmann::json& phases = r.timings["phases"];
  if (!phases.is_object()) phases = nlohmann::json::object();
  double accounted = 0;
  for (const auto& kv : phases.items())
    if (kv.value().is_number()) accounted += kv.value().get<double>();
  phases["report"] = reportSeconds;
  phases["other"] = std::max(0.0, wallSeconds - accounted);
  r.timings["wall_seconds"] = wallSeconds;
}

// Fills steps, checks and the verdict from run-plan's result.
void readRunPlanResult(const RunSpec& spec, const conformance::RunResult& j, RunResult& r) {
  for (const auto& s : j.steps)
    r.steps.push_back({static_cast<int>(s.run.step), s.run.loss, s.reference.loss, s.run.ce, s.reference.ce,
                       s.run.aux, s.reference.aux, s.run.gradNorm, s.reference.gradNorm});
  for (const auto& c : j.checks) {
    CheckOutcome o;
    o.check = c.check;
    o.passed = c.passed;
    o.explanation = c.explanation;
    o.measured = c.measured;
    o.requested = spec.checks.empty() || std::find(spec.checks.begin(), spec.checks.end(), o.check) != spec.checks.end();
    r.checks.push_back(o);
  }
  for (const auto& want : spec.checks)
    if (!j.check(want)) r.checks.push_back({want, false, true, "run-plan did not report this check", nlohmann::json::object()});
  r.collectives = j.step1Collectives;
  r.timings = j.timings.toJson();
  r.measuredMemory = j.measuredMemory;
  r.environment = j.environment;
  r.status = Status::kPass;
  for (const auto& c : r.checks)
    if (c.requested && !c.passed) {
      r.status = Status::kFail;
      r.reason = c.check + ": " + c.explanation;
      break;
    }
  // Without a check selection run-plan's own verdict counts too, so a check
  // added to run-plan later can never fail unnoticed.
  if (r.status == Status::kPass && spec.checks.empty() && !j.passed) {
    r.status = Status::kFail;
    r.reason = "run-plan reported a failed check";
  }
}

struct Progress {
  std::mutex mu;
  std::ostream* os;
  int total;
  std::atomic<int> done{0};
  void line(const std::string& s) {
    std::lock_guard<std::mutex> lock(mu);
    *os << s << std::endl;
  }
};

RunResult runOne(const RunSpec& spec, int index, const RunnerOptions& o, const std::string& workRoot,
                 const std::string& cache, const std::string& binary, Progress& progress) {
  RunResult r;
  r.id = spec.id;
  r.caseName = spec.caseName;
  r.caseFile = spec.caseFile;
  r.spec = spec.toJson();
  r.lossTolerance = spec.tolerance.lossAbs;
  const std::string backend = o.backend.empty() ? spec.backend : o.backend;
  r.spec["backend"] = backend;
  const std::string tag = moe::str("run ", index + 1, "/", progress.total, " ", spec.id);
  // The device lane: --device, else the case's, else the backend's default.
  std::string device;
  try {
    device = comm::resolveDeviceType(backend, o.device.empty() ? spec.device : o.device);
  } catch (const HarnessError& e) {
    r.status = Status::kError;
    r.reason = e.what();
    return r;
  }
  r.spec["device"] = device;
  if (device == "cuda") {
    // nccl needs one GPU per rank; gloo ranks may share one.
    std::string why;
    if (backend == "nccl" ? !comm::ncclUsable(spec.worldSize, &why) : !comm::cudaUsable(1, &why)) {
      // A skip with the reason, never a pass; an error under
      // MOE_HARNESS_REQUIRE_GPU=1 (common/gpu_requirement.h).
      r.status = moe::gpuRequired() ? Status::kError : Status::kSkip;
      r.reason = moe::gpuRequired() ? "MOE_HARNESS_REQUIRE_GPU=1 and this run cannot run: " + why : why;
      return r;
    }
  }
  const fs::path dir = fs::path(workRoot) / "runs" / spec.id;
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << spec.model.dump(2) << "\n";
  std::ofstream(dir / "plan.json") << spec.plan.dump(2) << "\n";
  const std::string resultPath = (dir / "result.json").string();
  std::vector<std::string> argv = {binary, "run-plan",
                                   "--config", (dir / "config.json").string(),
                                   "--mesh", spec.mesh.dump(),
                                   "--plan", (dir / "plan.json").string(),
                                   "--dtype", spec.dtype,
                                   "--steps", std::to_string(spec.steps),
                                   "--seed", std::to_string(spec.seed),
                                   "--batch-size", std::to_string(spec.batchSize),
                                   "--seq-len", std::to_string(spec.seqLen),
                                   "--tolerance", spec.tolerance.toJson().dump(),
                                   "--result-json", resultPath,
                                   "--reference-cache", cache,
                                   "--backend", backend};
  // Only a non-default lane is passed, so run-plan builds without --device
  // still run every CPU case.
  if (device != comm::defaultDeviceType(backend)) argv.insert(argv.end(), {"--device", device});
  // Defaults are not passed, so run-plan builds without these options still
  // run every case that does not need them.
  if (spec.wrapper != "none") argv.insert(argv.end(), {"--wrapper", spec.wrapper});
  if (!spec.fsdpExperts.empty() && spec.wrapper != "none") argv.insert(argv.end(), {"--fsdp-experts", spec.fsdpExperts});
  if (spec.loading != "shard_on_read") argv.insert(argv.end(), {"--load", spec.loading});
  if (!spec.checkpoint.empty()) argv.insert(argv.end(), {"--checkpoint", spec.checkpoint});
  if (spec.allowNonFiniteCheckpoint) argv.push_back("--allow-nonfinite-checkpoint");
  // The case's expected placements: run-plan's expected_placements check.
  if (!spec.expectedPlacements.empty())
    argv.insert(argv.end(), {"--expect-placements", checks::placementExpectationsToJson(spec.expectedPlacements).dump()});

  std::ofstream log(dir / "output.log");
  std::deque<std::string> tail;
  std::mutex tailMu;
  static const std::regex stepRe("run-plan: step ([0-9]+)/([0-9]+)");
  auto onLine = [&](const std::string& line) {
    std::lock_guard<std::mutex> lock(tailMu);
    log << line << "\n";
    tail.push_back(line);
    if (tail.size() > 60) tail.pop_front();
    std::smatch m;
    if (line.rfind("[rank 0]", 0) == 0 && std::regex_search(line, m, stepRe))
      progress.line(moe::str(tag, ": step ", m[1].str(), "/", m[2].str()));
  };
  LineBuf outBuf(onLine), errBuf(onLine);
  std::ostream out(&outBuf), err(&errBuf);
  launch::LaunchOptions lo;
  lo.nranks = spec.worldSize;
  lo.timeout = std::chrono::milliseconds(static_cast<int64_t>(spec.timeoutSeconds * 1000));
  lo.out = &out;
  lo.err = &err;
  lo.quiet = true;
  lo.traceDir = (dir / "trace").string();
  lo.iface = o.iface;
  lo.spawn = o.spawn;
  lo.env["MOE_HARNESS_GIT_REVISION"] = gitRevision();
  {
    std::ostringstream cmd;
    for (const auto& a : argv) cmd << (cmd.tellp() ? " '" : "'") << a << "'";
    log << "# " << cmd.str() << "\n";
  }
  if (spec.saveAt > 0) {
    // Save / resume (issue 19): the described run saves; a second job
    // resumes from its checkpoint on the resume mesh, plan and wrapper.
    const std::string ckpt = (dir / "checkpoint").string(), saveResult = (dir / "save_result.json").string();
    auto saveArgv = argv;
    for (size_t i = 0; i + 1 < saveArgv.size(); ++i)
      if (saveArgv[i] == "--result-json") saveArgv[i + 1] = saveResult;
    saveArgv.insert(saveArgv.end(),
                    {"--save", ckpt, "--save-at", std::to_string(spec.saveAt), "--save-format", spec.saveFormat});
    progress.line(moe::str(tag, ": saving (", spec.worldSize, " ranks, mesh ", spec.mesh.dump(), ")"));
    launch::LaunchResult sr;
    try {
      sr = launch::launchProgram(lo, saveArgv);
    } catch (const std::exception& e) {
      r.status = Status::kError;
      r.reason = moe::str("could not launch the saving job: ", e.what());
      return r;
    }
    if (!sr.ok) {
      out.flush();
      err.flush();
      r.status = Status::kFail;
      r.reason = moe::str("the saving job failed (exit ", sr.exitCode(), "; its checkpoint_complete or another check, ",
                          saveResult, ")");
      std::lock_guard<std::mutex> lock(tailMu);
      r.log = lastLines(tail);
      return r;
    }
    std::ofstream(dir / "resume_plan.json") << spec.resumePlan.dump(2) << "\n";
    for (size_t i = 0; i + 1 < argv.size(); ++i) {
      if (argv[i] == "--mesh") argv[i + 1] = spec.resumeMesh.dump();
      if (argv[i] == "--plan") argv[i + 1] = (dir / "resume_plan.json").string();
    }
    for (size_t i = 0; i < argv.size(); ++i)
      if (argv[i] == "--wrapper" || argv[i] == "--fsdp-experts" || argv[i] == "--load") {
        argv.erase(argv.begin() + static_cast<std::ptrdiff_t>(i), argv.begin() + static_cast<std::ptrdiff_t>(i) + 2);
        --i;
      }
    if (spec.resumeWrapper != "none") argv.insert(argv.end(), {"--wrapper", spec.resumeWrapper});
    argv.insert(argv.end(), {"--resume", ckpt});
    lo.nranks = spec.resumeWorldSize;
    log << "# resume: " << spec.resumeWorldSize << " ranks, mesh " << spec.resumeMesh.dump() << "\n";
  }
  progress.line(moe::str(tag, ": started (", spec.worldSize, " ranks, mesh ", spec.mesh.dump(), ")"));
  launch::LaunchResult lr;
  try {
    lr = launch::launchProgram(lo, argv);
  } catch (const std::exception& e) {
    r.status = Status::kError;
    r.reason = moe::str("could not launch the job: ", e.what());
    return r;
  }
  r.seconds = lr.seconds;
  const auto tReport = std::chrono::steady_clock::now();  // the job has ended
  out.flush();
  err.flush();
  std::lock_guard<std::mutex> lock(tailMu);
  nlohmann::json doc;
  bool haveResult = false;
  if (fs::exists(resultPath)) {
    try {
      std::ifstream in(resultPath);
      in >> doc;
      haveResult = true;
    } catch (const nlohmann::json::exception& e) {
      r.reason = moe::str("unreadable result ", resultPath, ": ", e.what());
    }
  }
  // A finished run (its verdict written) with exit 0 or 1: the checks decide.
  if (haveResult && !lr.timedOut && (lr.ok || lr.exitCode() == 1)) {
    try {
      readRunPlanResult(spec, conformance::RunResult::fromJson(doc), r);
      addRunnerPhases(r, lr.seconds, std::chrono::duration<double>(std::chrono::steady_clock::now() - tReport).count());
    } catch (const std::exception& e) {
      r.status = Status::kError;
      r.reason = moe::str("could not read the run's result: ", e.what());
    }
    if (r.status != Status::kPass) r.log = lastLines(tail);
    fs::remove_all(dir / "trace");
    return r;
  }
  r.status = Status::kError;
  const std::string firstSummaryLine = lr.summary.substr(0, lr.summary.find('\n'));
  // The launcher's root cause (harness/launch/failure.h): the rank that
  // failed first on its own, with its own message; a peer's consequent
  // error (a closed connection, a store timeout) is never the reason while
  // such a failure exists. Ranks that ended without a message (a crash, an
  // exit) are described by the summary's first line.
  const launch::RankFailure* root = lr.failure.root();
  const bool rootHasMessage = root && (root->cls == "user_error" || root->cls == "internal_error" || root->secondary()) &&
                              root->cls != "stopped";
  if (lr.timedOut || lr.desync) r.reason = firstSummaryLine.empty() ? "timed out" : firstSummaryLine;
  else if (rootHasMessage)
    r.reason = moe::str("rank ", root->rank, ": ", root->cls == "internal_error" ? "internal error: " : "", root->error);
  else if (const std::string userError = userErrorOf(tail); !userError.empty()) r.reason = userError;
  else r.reason = firstSummaryLine.empty() ? moe::str("job failed with exit code ", lr.exitCode()) : firstSummaryLine;
  r.failure = lr.failure.toJson();
  r.log = lastLines(tail) + (lr.summary.empty() ? "" : "\n" + lr.summary + "\n");
  const fs::path fr = fs::path(lr.traceDir.empty() ? (dir / "trace").string() : lr.traceDir) / "flight_recorder.json";
  if (fs::exists(fr)) r.flightRecorder = fr.string();
  return r;
}

RunResult brokenCaseResult(const CaseFile& c) {
  RunResult r;
  r.id = c.name;
  r.caseName = c.name;
  r.caseFile = c.path;
  r.status = Status::kError;
  r.reason = c.error;
  r.spec = {{"case_file", c.path}, {"labels", c.labels}};
  return r;
}

}  // namespace

int defaultRunJobs() {
  cpu_set_t set;
  CPU_ZERO(&set);
  int cores = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 0;
  if (cores <= 0) cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::min(64, 2 * cores);
}

std::string gitRevision() {
  static const std::string rev = [] {
    const std::string dir = fs::path(defaultCasesDir()).parent_path().string();
    std::string cmd = "git -C '" + dir + "' rev-parse --short=12 HEAD 2>/dev/null";
    std::string out;
    if (FILE* p = popen(cmd.c_str(), "r")) {
      char buf[128];
      while (fgets(buf, sizeof(buf), p)) out += buf;
      pclose(p);
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    if (out.empty()) return std::string("unknown");
    // A dirty tree is not the commit it names.
    std::string dirty;
    cmd = "git -C '" + dir + "' status --porcelain --untracked-files=no 2>/dev/null";
    if (FILE* p = popen(cmd.c_str(), "r")) {
      char buf[256];
      if (fgets(buf, sizeof(buf), p)) dirty = "-dirty";
      pclose(p);
    }
    return out + dirty;
  }();
  return rev;
}

reports::Report runSuite(const std::vector<SuiteItem>& items, const RunnerOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  reports::Report report;
  report.created = nowUtc();
  report.environment = conformance::environmentJson(o.backend.empty() ? "per case" : o.backend, gitRevision());
  report.suite = {{"selection", o.selection},
                  {"jobs", o.jobs},
                  {"backend", o.backend.empty() ? "per case" : o.backend},
                  {"device", o.device.empty() ? "per case" : o.device},
                  {"runs", items.size()}};
  const bool tempWork = o.workDir.empty();
  std::string workRoot = o.workDir;
  if (tempWork) {
    char tmpl[] = "/tmp/moe-harness-run-XXXXXX";
    if (!mkdtemp(tmpl)) fail("cannot create a temporary directory: ", strerror(errno));
    workRoot = tmpl;
  }
  fs::create_directories(workRoot);
  const std::string cache = o.referenceCache.empty() ? workRoot + "/reference-cache" : o.referenceCache;
  const std::string binary = o.harnessBinary.empty() ? selfBinary() : o.harnessBinary;
  // How the ranks start (LaunchOptions::spawn), with the reason when forking
  // was asked for and cannot be done.
  if (o.spawn == launch::SpawnMode::kExec) report.suite["spawn"] = "exec";
  else if (launch::forkServerServes(binary)) report.suite["spawn"] = "fork";
  else if (!launch::forkServerRunning())
    report.suite["spawn"] = "exec (no fork server: " + launch::forkServerUnavailableReason() + ")";
  else report.suite["spawn"] = "exec (the fork server runs another program than " + binary + ")";

  Progress progress;
  progress.os = o.progress ? o.progress : &std::cerr;
  progress.total = static_cast<int>(items.size());
  report.runs.resize(items.size());
  report.suite["complete"] = false;
  report.suite["finished_runs"] = 0;
  std::vector<char> finished(items.size(), 0);
  std::mutex finishedMutex;
  // The report of the runs finished so far (suite order), for onRunFinished.
  auto publish = [&](size_t i, RunResult r) {
    std::lock_guard<std::mutex> lock(finishedMutex);
    report.runs[i] = std::move(r);
    finished[i] = 1;
    if (!o.onRunFinished) return;
    reports::Report partial;
    partial.created = report.created;
    partial.environment = report.environment;
    partial.suite = report.suite;
    for (size_t k = 0; k < items.size(); ++k)
      if (finished[k]) partial.runs.push_back(report.runs[k]);
    partial.suite["finished_runs"] = partial.runs.size();
    partial.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    try {
      o.onRunFinished(partial);
    } catch (const std::exception& e) {
      progress.line(moe::str("could not write the partial report: ", e.what()));
    }
  };
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next++) < items.size();) {
      const auto& item = items[i];
      RunResult r = item.run ? runOne(*item.run, static_cast<int>(i), o, workRoot, cache, binary, progress)
                             : brokenCaseResult(*item.brokenCase);
      const int done = ++progress.done;
      std::string line = moe::str("[", done, "/", progress.total, " done] ", reports::statusName(r.status), " ", r.id);
      if (item.run && r.status != Status::kSkip) line += " (" + reports::formatSeconds(r.seconds) + ")";
      if (r.status != Status::kPass) line += ": " + r.reason;
      progress.line(line);
      publish(i, std::move(r));
    }
  };
  std::vector<std::thread> threads;
  for (int j = 0; j < std::max(1, o.jobs); ++j) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report.suite["complete"] = true;
  report.suite["finished_runs"] = report.runs.size();

  const auto t = report.totals();
  std::ostringstream os;
  os << "\nper-run times:\n";
  for (const auto& r : report.runs)
    os << "  " << reports::statusName(r.status) << "  " << r.id << "  " << reports::formatSeconds(r.seconds) << "\n";
  os << "totals: " << t.pass << " pass, " << t.fail << " fail, " << t.error << " error, " << t.skip << " skip of "
     << t.total() << " runs; suite time " << reports::formatSeconds(report.seconds) << " with " << o.jobs << " job(s)";
  progress.line(os.str());
  if (tempWork) {
    if (t.error == 0) fs::remove_all(workRoot);
    else progress.line("work files of the runs kept in " + workRoot);
  }
  return report;
}

}  // namespace moe::cases
