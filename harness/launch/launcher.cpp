#include "harness/launch/launcher.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "harness/comm/communicator.h"
#include "harness/comm/trace_verifier.h"
#include "harness/launch/fork_server.h"
#include "harness/launch/rank_env.h"
#include "harness/store/job_store.h"

namespace moe::launch {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
std::string makeTempDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/moe-harness-job-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back(0);
  if (!mkdtemp(buf.data())) fail("launcher: cannot create a temporary directory from ", tmpl, ": ", strerror(errno));
  return buf.data();
}

// Removes the files this launcher and its ranks create, then the directory.
void removeTraceDir(const std::string& dir) {
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n.rfind("rank", 0) == 0 || n == "flight_recorder.json") unlink((dir + "/" + n).c_str());
    }
    closedir(d);
  }
  rmdir(dir.c_str());
}

struct Stream {
  int fd = -1;
  std::string buf;
};

struct Child {
  RankStatus st;
  Stream out, err;
  int portFd = -1;  // write end: the launcher sends the store address and port here
  bool done = false;
  double endedAt = 0;  // wall clock when reaped
};

class Job {
 public:
  explicit Job(const LaunchOptions& o) : opts_(o) {
    if (opts_.nranks < 1) fail("launch: need at least 1 rank, got ", opts_.nranks);
    traceDir_ = opts_.traceDir.empty() ? makeTempDir() : opts_.traceDir;
    if (!opts_.traceDir.empty()) mkdir(traceDir_.c_str(), 0755);
    out_ = opts_.out ? opts_.out : &std::cout;
    err_ = opts_.err ? opts_.err : &std::cerr;
    clearRankFailureRecords(traceDir_, opts_.nranks);
    // An earlier job's traces in a reused directory are not this job's:
    // neither its reports nor its verification may read them.
    for (int r = 0; r < opts_.nranks; ++r) unlink((traceDir_ + "/rank" + std::to_string(r) + ".trace").c_str());
    token_ = store::newJobToken();
    // Trace verification (launcher.h): only where the launcher sees every
    // rank's trace file and nobody chose a mode.
    const char* env = getenv("MOE_HARNESS_VERIFY");
    const bool chosen = (env && *env && std::string(env) != "trace") ||
                        (opts_.env.count("MOE_HARNESS_VERIFY") && opts_.env.at("MOE_HARNESS_VERIFY") != "trace");
    if (opts_.traceVerify && opts_.iface.empty() && !chosen)
      verifier_ = std::make_unique<comm::TraceVerifier>(traceDir_, opts_.nranks);
  }

  // Forks every rank here; `childMain` runs in the child after its
  // environment is set and never returns. `kind`: LaunchResult::spawn.
  LaunchResult run(const char* kind, const std::function<void(int rank)>& childMain) {
    spawnKind_ = kind;
    return start([&](int rank, RankPipes& p, const EnvVars& vars) { return forkHere(rank, p, vars, childMain); });
  }
  // Every rank forked by the fork server, running `argv` in-process.
  LaunchResult runViaServer(const std::vector<std::string>& argv) {
    spawnKind_ = "fork_server";
    char cwd[4096];
    if (!getcwd(cwd, sizeof(cwd))) fail("launch: getcwd(): ", strerror(errno));
    return start([&](int, RankPipes& p, const EnvVars& vars) {
      ForkedRankSpec spec;
      spec.outFd = p.out[1];
      spec.errFd = p.err[1];
      spec.portFd = p.port[0];
      spec.argv = argv;
      spec.cwd = cwd;
      spec.env = environmentWith(vars);
      return forkRankViaServer(spec);
    });
  }

 private:
  using EnvVars = std::vector<std::pair<std::string, std::string>>;
  struct RankPipes {
    int out[2], err[2], port[2];
  };
  // Creates one rank process and returns its pid (the leader of its own
  // process group, a child of this process).
  using Spawner = std::function<pid_t(int rank, RankPipes& pipes, const EnvVars& vars)>;

  LaunchResult start(const Spawner& spawner) {
    start_ = Clock::now();
    wallStart_ = wallNow();
    std::cout.flush();
    std::cerr.flush();
    fflush(nullptr);
    for (int r = 0; r < opts_.nranks; ++r) {
      try {
        spawn(r, spawner);
      } catch (...) {
        for (auto& c : children_) {  // the started ranks exit 112
          close(c.portFd);
          close(c.out.fd);
          close(c.err.fd);
        }
        reapAll();
        throw;
      }
    }
    if (verifier_) {
      std::vector<int> pids;
      for (const auto& c : children_) pids.push_back(c.st.pid);
      verifier_->expectPids(std::move(pids));
    }
    // Only now start the store (and its thread): the children were forked
    // from a process without extra threads.
    store::JobStoreOptions so;
    so.iface = opts_.iface;
    so.numWorkers = opts_.nranks;
    so.jobToken = token_;
    store::HostedStore hosted;
    try {
      hosted = store::hostJobStore(so);
    } catch (...) {
      killAll(SIGKILL);
      reapAll();
      throw;
    }
    storeAddress_ = hosted.address;
    storePort_ = hosted.port;
    std::shared_ptr<store::Store> server = hosted.store;
    // Ranks on this machine reach a wildcard bind through loopback.
    const std::string masterAddr =
        (hosted.address == "0.0.0.0" || hosted.address == "::") ? "127.0.0.1" : hosted.address;
    for (auto& c : children_) {
      std::string msg = masterAddr + " " + std::to_string(hosted.port) + "\n";
      if (write(c.portFd, msg.data(), msg.size()) < 0) {}  // a dead child is noticed by waitpid
      close(c.portFd);
      c.portFd = -1;
    }
    monitor();
    server.reset();
    return finish();
  }

  // What every rank gets on top of the launcher's environment (launcher.h);
  // MASTER_ADDR and MASTER_PORT come later, through the port pipe.
  EnvVars rankVars(int rank, const std::string& spawnNs) const {
    EnvVars v = {{store::kJobTokenEnv, token_}};
    if (!opts_.iface.empty()) v.push_back({"MOE_HARNESS_IFACE", opts_.iface});
    v.insert(v.end(), {{"RANK", std::to_string(rank)},
                       {"LOCAL_RANK", std::to_string(rank)},
                       {"WORLD_SIZE", std::to_string(opts_.nranks)},
                       {"LOCAL_WORLD_SIZE", std::to_string(opts_.nranks)},
                       {"GROUP_RANK", "0"},
                       {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                       {"MOE_HARNESS_TRACE_DIR", traceDir_},
                       {kSpawnTimeEnv, spawnNs}});
    if (verifier_) v.push_back({"MOE_HARNESS_VERIFY", "trace"});
    // Under ctest's GPU allocation the job sees exactly its GPUs (unless
    // the user chose them), so concurrent tests never share one.
    if (getenv("CUDA_VISIBLE_DEVICES") == nullptr) {
      const std::string gpus = ctestAllocatedGpus([](const char* n) { return getenv(n); });
      if (!gpus.empty()) v.push_back({"CUDA_VISIBLE_DEVICES", gpus});
    }
    for (const auto& kv : opts_.env) v.push_back(kv);
    return v;
  }

  // This process's environment with `vars` set ("NAME=VALUE" each), what an
  // exec'd rank would see after its setenv calls.
  static std::vector<std::string> environmentWith(const EnvVars& vars) {
    std::map<std::string, std::string> env;
    for (char** e = environ; *e; ++e) {
      const char* eq = strchr(*e, '=');
      if (eq) env[std::string(static_cast<const char*>(*e), eq)] = eq + 1;
    }
    for (const auto& [k, v] : vars) env[k] = v;
    std::vector<std::string> out;
    for (const auto& [k, v] : env) out.push_back(k + "=" + v);
    return out;
  }

  pid_t forkHere(int rank, RankPipes& p, const EnvVars& vars, const std::function<void(int)>& childMain) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) fail("launch: fork() for rank ", rank, ": ", strerror(errno));
    if (pid == 0) {
      setpgid(0, 0);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(111);  // the launcher died before prctl
      dup2(p.out[1], STDOUT_FILENO);
      dup2(p.err[1], STDERR_FILENO);
      close(p.out[0]); close(p.out[1]);
      close(p.err[0]); close(p.err[1]);
      close(p.port[1]);
      for (auto& c : children_) {  // the siblings' pipe ends are not ours
        close(c.out.fd); close(c.err.fd);
        if (c.portFd >= 0) close(c.portFd);
      }
      for (const auto& [k, v] : vars) setenv(k.c_str(), v.c_str(), 1);
      if (!readStoreAddressLine(p.port[0])) _exit(112);  // launcher could not start the store
      close(p.port[0]);
      childMain(rank);
      _exit(127);
    }
    setpgid(pid, pid);  // also in the parent, to win the race with kill()
    return pid;
  }

  void spawn(int rank, const Spawner& spawner) {
    RankPipes p;
    // O_CLOEXEC: a program exec'd by this or a concurrent job (another
    // thread) must not inherit our pipe ends, or the readers never see EOF.
    if (pipe2(p.out, O_CLOEXEC) || pipe2(p.err, O_CLOEXEC) || pipe2(p.port, O_CLOEXEC))
      fail("launch: pipe(): ", strerror(errno));
    // Formatted before the fork: the child only calls setenv with it.
    const std::string spawnNs = std::to_string(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
            .count());
    pid_t pid = -1;
    try {
      pid = spawner(rank, p, rankVars(rank, spawnNs));
    } catch (...) {
      for (int* fds : {p.out, p.err, p.port}) {
        close(fds[0]);
        close(fds[1]);
      }
      throw;
    }
    close(p.out[1]);
    close(p.err[1]);
    close(p.port[0]);
    Child c;
    c.st.rank = rank;
    c.st.pid = pid;
    c.out.fd = p.out[0];
    c.err.fd = p.err[0];
    c.portFd = p.port[1];
    children_.push_back(std::move(c));
  }

  void emit(int rank, Stream& s, bool isErr, bool flushAll) {
    std::ostream& os = isErr ? *err_ : *out_;
    size_t pos;
    while ((pos = s.buf.find('\n')) != std::string::npos || (flushAll && !s.buf.empty())) {
      std::string line = pos == std::string::npos ? s.buf : s.buf.substr(0, pos);
      s.buf.erase(0, pos == std::string::npos ? s.buf.size() : pos + 1);
      if (opts_.prefixOutput) os << "[rank " << rank << "] ";
      os << line << "\n";
    }
    os.flush();
  }

  // Reads what is available; returns false at EOF (and closes the fd).
  bool drain(int rank, Stream& s, bool isErr) {
    char buf[65536];
    ssize_t n = read(s.fd, buf, sizeof(buf));
    if (n > 0) {
      s.buf.append(buf, static_cast<size_t>(n));
      emit(rank, s, isErr, false);
      return true;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
    emit(rank, s, isErr, true);
    close(s.fd);
    s.fd = -1;
    return false;
  }

  void pollOutput(int timeoutMs) {
    std::vector<pollfd> fds;
    std::vector<std::pair<Child*, bool>> owners;
    for (auto& c : children_) {
      if (c.out.fd >= 0) { fds.push_back({c.out.fd, POLLIN, 0}); owners.push_back({&c, false}); }
      if (c.err.fd >= 0) { fds.push_back({c.err.fd, POLLIN, 0}); owners.push_back({&c, true}); }
    }
    if (fds.empty()) {
      usleep(timeoutMs * 1000);
      return;
    }
    int rc = poll(fds.data(), fds.size(), timeoutMs);
    if (rc <= 0) return;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Child* c = owners[i].first;
      drain(c->st.rank, owners[i].second ? c->err : c->out, owners[i].second);
    }
  }

  void reap(bool block) {
    // Ranks found dead in one sweep died within one poll interval of each
    // other; the one killed by a signal (abort, segfault) is the cause more
    // likely than peers that exited on a broken connection.
    int sweepFailed = -1;
    bool sweepSignaled = false;
    for (auto& c : children_) {
      if (c.done) continue;
      int status = 0;
      pid_t p = waitpid(c.st.pid, &status, block ? 0 : WNOHANG);
      if (p != c.st.pid) continue;
      c.done = true;
      c.st.seconds = since(start_);
      c.endedAt = wallNow();
      if (WIFEXITED(status)) {
        c.st.exited = true;
        c.st.exitCode = WEXITSTATUS(status);
      } else if (WIFSIGNALED(status)) {
        c.st.signal = WTERMSIG(status);
      }
      // Ranks that ended by our SIGTERM/SIGKILL; the others ended on their own.
      c.st.stoppedByLauncher = tearingDown_ && !c.st.exited && (c.st.signal == SIGTERM || c.st.signal == SIGKILL);
      bool failed = !(c.st.exited && c.st.exitCode == 0);
      if (failed && !tearingDown_ && (sweepFailed < 0 || (!sweepSignaled && !c.st.exited))) {
        sweepFailed = c.st.rank;
        sweepSignaled = !c.st.exited;
      }
    }
    // The first failure starts the grace in which the others may still fail
    // on their own (LaunchOptions::failureGrace); finish() attributes.
    if (sweepFailed >= 0 && firstFailed_ < 0) {
      firstFailed_ = sweepFailed;
      failedAt_ = Clock::now();
    }
  }

  void killAll(int sig) {
    for (auto& c : children_)
      if (!c.done) kill(-c.st.pid, sig);
  }

  void reapAll() { reap(/*block=*/true); }

  void startTeardown() {
    tearingDown_ = true;
    teardownDeadline_ = Clock::now() + opts_.killGrace;
    killAll(SIGTERM);
  }

  bool allDone() const {
    for (const auto& c : children_)
      if (!c.done) return false;
    return true;
  }

  // The desync watchdog (launcher.h): stops the job once the traces prove
  // a deadlock that has held for the grace period.
  void watchForDesync() {
    if (opts_.desyncGrace.count() <= 0) return;
    const auto now = Clock::now();
    if (now < nextDesyncPoll_) return;
    nextDesyncPoll_ = now + opts_.desyncPoll;
    std::vector<bool> exited;
    for (const auto& c : children_) exited.push_back(c.done);
    auto traces = comm::readTraceDir(traceDir_, opts_.nranks);
    std::string proof = comm::diagnoseDeadlock(traces, exited);
    if (proof.empty() || proof != deadlock_) {
      deadlock_ = proof;
      deadlockSince_ = now;
      return;
    }
    if (now - deadlockSince_ < opts_.desyncGrace) return;
    desync_ = true;
    traces_ = std::move(traces);
    tracesRead_ = true;
    startTeardown();
  }

  // Trace verification (launcher.h): compares what the ranks recorded;
  // on a verdict, tells every rank and starts the grace after which the
  // ranks that did not report it are stopped.
  void watchVerification() {
    if (!verifier_ || !mismatch_.empty()) return;
    const auto now = Clock::now();
    if (now < nextVerifyPoll_) return;
    nextVerifyPoll_ = now + opts_.verifyPoll;
    const std::string v = verifier_->poll();
    if (v.empty()) return;
    mismatch_ = v;
    mismatchAt_ = now;
    verifier_->postVerdict();
  }

  void monitor() {
    while (!allDone()) {
      pollOutput(20);
      reap(false);
      if (!tearingDown_) watchVerification();
      if (!tearingDown_ && !mismatch_.empty() && Clock::now() - mismatchAt_ >= opts_.failureGrace) startTeardown();
      if (!tearingDown_ && firstFailed_ >= 0 && Clock::now() - failedAt_ >= opts_.failureGrace) startTeardown();
      if (!tearingDown_ && firstFailed_ < 0 && mismatch_.empty()) watchForDesync();
      if (!tearingDown_ && firstFailed_ < 0 && opts_.timeout.count() > 0 && Clock::now() - start_ > opts_.timeout) {
        timedOut_ = true;
        // Collect every rank's state while the ranks still hang, then kill.
        traces_ = comm::readTraceDir(traceDir_, opts_.nranks);
        tracesRead_ = true;
        startTeardown();
      }
      if (tearingDown_ && Clock::now() > teardownDeadline_) killAll(SIGKILL);
    }
    // Children are gone; read what is left in the pipes (bounded: a
    // grandchild holding a pipe open must not block us).
    for (int i = 0; i < 50; ++i) {
      bool open = false;
      for (auto& c : children_) open |= c.out.fd >= 0 || c.err.fd >= 0;
      if (!open) break;
      pollOutput(10);
    }
    for (auto& c : children_) {
      kill(-c.st.pid, SIGKILL);  // grandchildren in the rank's process group
      // Those already dead were re-parented to us when this process is a
      // child subreaper (fork_server.h): reap them, they are ours to reap.
      while (waitpid(-c.st.pid, nullptr, WNOHANG) > 0) {}
      for (Stream* s : {&c.out, &c.err}) {
        if (s->fd >= 0) {
          emit(c.st.rank, *s, s == &c.err, true);
          close(s->fd);
          s->fd = -1;
        }
      }
    }
  }

  LaunchResult finish() {
    // The ranks' last calls, recorded after the last poll (a mismatch in a
    // job's final collectives); not after a timeout or desync, whose
    // traces are what the report shows.
    if (verifier_ && mismatch_.empty() && !timedOut_ && !desync_) {
      mismatch_ = verifier_->poll();
      mismatchAt_ = Clock::now();
    }
    LaunchResult r;
    r.mismatch = mismatch_;
    r.verify = verifier_ ? "trace" : "";
    r.verifiedCalls = verifier_ ? verifier_->verifiedCalls() : 0;
    r.seconds = since(start_);
    r.timedOut = timedOut_;
    r.desync = desync_;
    r.spawn = spawnKind_;
    r.storeAddress = storeAddress_;
    r.storePort = storePort_;
    for (const auto& c : children_) r.ranks.push_back(c.st);
    if (!timedOut_ && !desync_ && (firstFailed_ >= 0 || !mismatch_.empty())) {
      r.failure = attribute();
      if (const RankFailure* root = r.failure.root()) firstFailed_ = root->rank;
      else if (firstFailed_ < 0) firstFailed_ = 0;  // a mismatch every rank ran through and exited 0
    }
    r.firstFailedRank = firstFailed_;
    r.ok = !timedOut_ && !desync_ && firstFailed_ < 0 && mismatch_.empty();
    if (r.ok) {
      r.summary = moe::str("job ok: ", opts_.nranks, " rank(s) in ", r.seconds, " s");
      if (opts_.traceDir.empty()) removeTraceDir(traceDir_);
      else r.traceDir = traceDir_;
      return r;
    }
    if (!tracesRead_) traces_ = comm::readTraceDir(traceDir_, opts_.nranks);
    r.traces = traces_;
    r.traceDir = traceDir_;
    std::ostringstream os;
    if (desync_) {
      os << "collective desync: stopped after " << since(start_) << " s, no rank can make progress: " << deadlock_
         << "\n";
      for (const auto& st : r.ranks)
        os << "  rank " << st.rank << ": " << (st.stoppedByLauncher ? "stopped by the launcher" : st.describe()) << "\n";
    } else if (timedOut_) {
      os << "job timed out after " << opts_.timeout.count() / 1000.0 << " s; every rank's state at the timeout:\n";
      for (const auto& st : r.ranks) {
        const auto& t = traces_[st.rank];
        os << "  rank " << st.rank << ": ";
        if (!t.error.empty() || t.records.empty()) os << "no collective recorded";
        else os << "last collective " << comm::describeRecord(t.records.back()) << " ["
                << comm::callStateName(static_cast<comm::CallState>(t.records.back().state)) << "]";
        os << "\n";
      }
    } else if (!mismatch_.empty()) {
      os << "job failed: " << mismatch_ << "\n";
      os << "  (found by the launcher comparing the ranks' traces; every rank is told and reports it)\n";
      for (const auto& st : r.ranks) {
        os << "  rank " << st.rank << ": ";
        if (st.exited && st.exitCode == 0) os << "exited with code 0 before the verdict reached it\n";
        else if (st.stoppedByLauncher) os << "stopped by the launcher after the verdict (" << st.describe() << ")\n";
        else if (!st.exited) os << "ended by its backend on the mismatched buffers (" << st.describe() << ")\n";
        else os << "reported the mismatch (" << st.describe() << ")\n";
      }
    } else {
      const auto& st = r.ranks[firstFailed_];
      const auto& t = traces_[firstFailed_];
      os << "job failed: rank " << firstFailed_ << " " << st.describe() << " after " << st.seconds << " s; its last collective: ";
      if (!t.error.empty() || t.records.empty()) os << "none recorded";
      else os << comm::describeRecord(t.records.back()) << " ["
              << comm::callStateName(static_cast<comm::CallState>(t.records.back().state)) << "]";
      os << "\n";
      os << r.failure.describe(wallStart_);
      for (const auto& o : r.ranks) {
        if (o.rank == firstFailed_) continue;
        os << "  rank " << o.rank << ": " << (o.stoppedByLauncher ? "stopped by the launcher (" + o.describe() + ")" : o.describe()) << "\n";
      }
    }
    std::string div = comm::diagnoseDivergence(traces_);
    if (!div.empty()) os << "divergence: " << div << "\n";
    os << comm::formatTraceTable(traces_);
    nlohmann::json j;
    j["timed_out"] = timedOut_;
    j["desync"] = desync_ ? nlohmann::json(deadlock_) : nlohmann::json();
    j["mismatch"] = mismatch_.empty() ? nlohmann::json() : nlohmann::json(mismatch_);
    j["first_failed_rank"] = firstFailed_;
    j["failure"] = r.failure.toJson();
    j["divergence"] = div;
    for (const auto& st : r.ranks) {
      auto tj = comm::traceToJson(traces_[st.rank]);
      tj["status"] = st.describe();
      j["ranks"].push_back(tj);
    }
    std::string jsonPath = traceDir_ + "/flight_recorder.json";
    std::ofstream(jsonPath) << j.dump(2) << "\n";
    os << "flight recorder JSON: " << jsonPath;
    r.summary = os.str();
    if (!opts_.quiet) *err_ << r.summary << std::endl;
    return r;
  }

  // Every failed rank with its class, from its failure record (failure.h)
  // or, without one, from how it ended.
  FailureAttribution attribute() const {
    std::vector<RankFailure> all;
    for (const auto& c : children_) {
      const auto& st = c.st;
      if (st.exited && st.exitCode == 0) continue;
      RankFailure f;
      f.rank = st.rank;
      f.time = c.endedAt;
      if (auto rec = readRankFailureRecord(traceDir_, st.rank)) {
        f.error = rec->message;
        f.time = rec->time;
        const std::string secondary = classifyError(rec->message);
        f.cls = secondary.empty() ? (rec->kind.empty() ? "user_error" : rec->kind) : secondary;
      } else if (st.stoppedByLauncher) {
        f.cls = "stopped";
        f.error = "stopped by the launcher (" + st.describe() + ")";
      } else {
        f.cls = st.exited ? "exit" : "crash";
        f.error = st.describe();
      }
      all.push_back(std::move(f));
    }
    // Under a mismatch verdict every failure is its consequence: a rank
    // that raised it, one whose backend failed on the mismatched buffers,
    // one stopped after the grace. Each is attributed to the mismatch.
    if (!mismatch_.empty()) {
      const double verdictAt = wallStart_ + std::chrono::duration<double>(mismatchAt_ - start_).count();
      for (auto& f : all) {
        if (f.error.find("collective mismatch") == std::string::npos) f.error = mismatch_;
        f.cls = "user_error";
      }
      if (all.empty()) all.push_back(RankFailure{0, "user_error", mismatch_, verdictAt});
    }
    return attributeFailures(std::move(all));
  }

  LaunchOptions opts_;
  std::string token_;
  std::string storeAddress_;
  int storePort_ = 0;
  double wallStart_ = 0;
  Clock::time_point failedAt_;
  std::string traceDir_;
  std::ostream* out_;
  std::ostream* err_;
  std::vector<Child> children_;
  Clock::time_point start_;
  bool tearingDown_ = false;
  Clock::time_point teardownDeadline_;
  bool timedOut_ = false;
  bool desync_ = false;
  std::string deadlock_;  // the current deadlock proof ("" none)
  Clock::time_point deadlockSince_, nextDesyncPoll_;
  int firstFailed_ = -1;
  bool tracesRead_ = false;
  std::vector<comm::RankTrace> traces_;
  std::string spawnKind_;  // LaunchResult::spawn
  std::unique_ptr<comm::TraceVerifier> verifier_;  // trace verification, when it applies
  std::string mismatch_;                           // its verdict ("" none)
  Clock::time_point mismatchAt_, nextVerifyPoll_;
};

}  // namespace

std::string RankStatus::describe() const {
  if (exited) return "exited with code " + std::to_string(exitCode);
  const char* abbrev = sigabbrev_np(signal);
  return "killed by signal " + std::to_string(signal) + (abbrev ? std::string(" (SIG") + abbrev + ")" : "");
}

int LaunchResult::exitCode() const {
  if (ok) return 0;
  if (timedOut) return 124;
  if (desync) return 125;
  const auto& st = ranks.at(firstFailedRank);
  // The CLI's code for a user error (a CollectiveMismatch is one), where the
  // rank itself did not exit with its own code.
  if (!mismatch.empty() && !(st.exited && st.exitCode != 0)) return 2;
  if (st.exited) return st.exitCode ? st.exitCode : 1;
  return 128 + st.signal;
}

SpawnMode parseSpawnMode(const std::string& value, const std::string& what) {
  if (value == "fork") return SpawnMode::kFork;
  if (value == "exec") return SpawnMode::kExec;
  fail(what, ": '", value, "' is not a way to start ranks (known: fork, exec)");
}

const char* spawnModeName(SpawnMode m) { return m == SpawnMode::kFork ? "fork" : "exec"; }

SpawnMode spawnModeFromEnvironment(SpawnMode fallback) {
  const char* v = std::getenv(kSpawnEnv);
  if (!v || !*v) return fallback;
  return parseSpawnMode(v, kSpawnEnv);
}

LaunchResult launchProgram(const LaunchOptions& opts, const std::vector<std::string>& argv) {
  if (argv.empty()) fail("launch: no program given (usage: moe-harness launch -n N -- PROGRAM [ARGS...])");
  Job job(opts);
  if (opts.spawn == SpawnMode::kFork && forkServerServes(argv[0])) return job.runViaServer(argv);
  return job.run("exec", [&](int) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    // moe-harness ignores SIGPIPE (main.cpp); an arbitrary program gets the
    // default it would get from a shell (moe-harness ranks ignore it again).
    std::signal(SIGPIPE, SIG_DFL);
    execvp(args[0], args.data());
    fprintf(stderr, "launch: cannot execute %s: %s\n", args[0], strerror(errno));
    fflush(stderr);
    _exit(127);
  });
}

LaunchResult launchLocal(const LaunchOptions& opts, const std::function<int(const RankContext&)>& body) {
  Job job(opts);
  return job.run("fork", [&](int rank) {
    int code = 1;
    try {
      code = body(RankContext{rank, opts.nranks});
      if (code == 0) {
        // A mismatch in the body's last collectives (trace verification).
        const std::string v = comm::settleVerification();
        if (!v.empty()) {
          recordRankFailure("user_error", v);
          fprintf(stderr, "rank %d: error: %s\n", rank, v.c_str());
          code = 2;
        }
      }
    } catch (const HarnessError& e) {
      recordRankFailure("user_error", e.what());
      fprintf(stderr, "rank %d: error: %s\n", rank, e.what());
      code = 1;
    } catch (const std::exception& e) {
      recordRankFailure("internal_error", e.what());
      fprintf(stderr, "rank %d: error: %s\n", rank, e.what());
      code = 1;
    }
    std::cout.flush();
    std::cerr.flush();
    fflush(nullptr);
    _exit(code);
  });
}

}  // namespace moe::launch
