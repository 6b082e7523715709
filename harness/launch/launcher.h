#pragma once
// Runs N ranks of a job on this machine and watches them, like torchrun.
//
// Contract:
//  - Each rank gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
//    MASTER_ADDR, MASTER_PORT and TORCHELASTIC_USE_AGENT_STORE=True: the
//    launcher hosts the job's TCP store on a free port, so concurrent jobs
//    never collide. MOE_HARNESS_TRACE_DIR points at a per-job directory where
//    every rank's flight recorder keeps its trace file.
//  - The store listens on loopback (127.0.0.1) unless `iface` names an
//    interface or address (multi-host jobs); MASTER_ADDR is the address it
//    bound, and MOE_HARNESS_IFACE passes `iface` on to the ranks' Gloo
//    devices. Every job has a random token (MOE_HARNESS_JOB_TOKEN) without
//    which a client is refused (harness/store/job_store.h).
//  - Output lines of each rank are prefixed "[rank R] " (optional).
//  - Success only if every rank exits 0.
//  - When a rank dies (non-zero exit or signal) the others may fail on their
//    own for `failureGrace` (so their errors are recorded), then get SIGTERM,
//    then SIGKILL after `killGrace`; each rank runs in its own process group, which
//    is killed whole, and ranks die with the launcher (PR_SET_PDEATHSIG), so
//    no process of the job is left behind.
//  - On timeout every rank's flight-recorder state is read first, then the
//    job is killed.
//  - Desync watchdog: while the job runs, the launcher reads the traces
//    every `desyncPoll`; when they prove a collective deadlock
//    (comm::diagnoseDeadlock: every live rank blocked in a call that lacks
//    some of its members) and the same proof holds for `desyncGrace`, the
//    job is stopped at once and reported as a collective desync, with every
//    rank's state, instead of waiting for a communication timeout.
//  - Trace verification (communicator.h "Verification"): for a job on this
//    host (`iface` empty) whose environment leaves MOE_HARNESS_VERIFY unset
//    (or sets it to "trace"), and with `traceVerify` on, the ranks get
//    MOE_HARNESS_VERIFY=trace and the launcher compares their collectives'
//    fingerprints from the trace files every `verifyPoll`
//    (comm::TraceVerifier). On a mismatch it posts the verdict to every
//    rank (which raise it as CollectiveMismatch), lets them report it for
//    `failureGrace`, then stops the rest. The job fails with the mismatch
//    as its headline (summary's first line "job failed: collective
//    mismatch ..."), every failed rank is attributed to it (class
//    user_error, the verdict as its error), even when its own error was a
//    consequence (a backend error, a stop), and LaunchResult::mismatch holds
//    it. The traces are compared once more after the ranks exit, so a
//    mismatch in a job's last collectives still fails it. Otherwise (multi-
//    host, MOE_HARNESS_VERIFY=0/1) the ranks verify as that variable says.
//  - Root-cause attribution (failure.h): the job's failed rank is the one
//    that failed first on its own; errors raised because a peer died are
//    secondary and never chosen while such a failure exists.
//  - On failure or timeout the summary names the failed rank, its exit
//    status, its error and its last collective, the other primary errors and
//    the secondary ones (one line), shows a per-rank table of the last
//    collectives and where the ranks diverge, and the traces are written as
//    JSON to <traceDir>/flight_recorder.json (the directory is kept).
//
// Three ways to start ranks: exec a program (any program, fresh process);
// fork them from the fork server when the program is the one it serves
// (fork_server.h: the harness's own subcommands, LaunchOptions::spawn); or
// fork the calling process and run a function (launchLocal). Forking skips
// the ~0.6 s that a libtorch process needs to start. launchLocal's caller
// must not have started threads that the children need (the launcher forks
// before it starts its own store thread); the fork server has none.
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <iosfwd>
#include <map>
#include <string>
#include <vector>

#include "harness/comm/flight_recorder.h"
#include "harness/launch/failure.h"

namespace moe::launch {

// How launchProgram starts ranks. kExec: fork + exec argv[0] (any program).
// kFork: ranks forked by the fork server (fork_server.h) when it serves
// argv[0], exec otherwise (LaunchResult::spawn says which was used).
enum class SpawnMode { kExec, kFork };
// MOE_HARNESS_SPAWN=fork|exec chooses; unset or empty: `fallback`.
inline constexpr const char* kSpawnEnv = "MOE_HARNESS_SPAWN";
SpawnMode spawnModeFromEnvironment(SpawnMode fallback);
// "fork" / "exec"; parseSpawnMode throws HarnessError naming `what` and the value.
const char* spawnModeName(SpawnMode m);
SpawnMode parseSpawnMode(const std::string& value, const std::string& what);

struct LaunchOptions {
  int nranks = 1;
  SpawnMode spawn = SpawnMode::kExec;  // launchProgram only
  std::chrono::milliseconds timeout{0};  // 0: no timeout
  std::chrono::milliseconds killGrace{2000};
  bool prefixOutput = true;
  // Where rank output goes (prefixed). nullptr: the launcher's stdout/stderr.
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  // Trace directory; empty: a fresh temporary one, removed after success.
  std::string traceDir;
  std::map<std::string, std::string> env;  // extra environment for every rank
  bool quiet = false;  // no summary on stderr (the result still has it)
  // The desync watchdog (see the contract); desyncGrace 0 turns it off. The
  // grace only rules out a snapshot torn by ranks entering a call between
  // two reads: a proven deadlock never resolves.
  std::chrono::milliseconds desyncGrace{2000};
  std::chrono::milliseconds desyncPoll{250};
  // After the first rank fails, how long the others may still fail on their
  // own (and record why) before they are stopped: two ranks that fail at
  // once are both reported, and a peer's consequent error never hides the
  // cause because the launcher killed the cause first.
  std::chrono::milliseconds failureGrace{1000};
  // Interface name or address the job's store listens on (and the ranks'
  // Gloo devices bind, via MOE_HARNESS_IFACE); "" = loopback.
  std::string iface;
  // Trace verification where it applies (see the contract); false: the
  // ranks verify as MOE_HARNESS_VERIFY says (in-band by default).
  bool traceVerify = true;
  std::chrono::milliseconds verifyPoll{20};
};

struct RankStatus {
  int rank = 0;
  pid_t pid = 0;
  bool exited = false;   // normal exit (else killed by a signal)
  int exitCode = 0;
  int signal = 0;
  bool stoppedByLauncher = false;  // killed during teardown
  double seconds = 0;              // time from start to exit
  std::string describe() const;    // "exited with code 3", "killed by signal 6 (SIGABRT)"
};

struct LaunchResult {
  bool ok = false;
  bool timedOut = false;
  bool desync = false;  // stopped by the desync watchdog (summary starts "collective desync")
  // Trace verification's verdict ("" none): the CollectiveMismatch message.
  std::string mismatch;
  std::string verify;        // how the ranks verified: "trace", or "" (as MOE_HARNESS_VERIFY says)
  int64_t verifiedCalls = 0;  // collectives the launcher compared and found consistent
  // The root cause (failure.h): the earliest rank that failed on its own;
  // without one, the earliest secondary failure.
  int firstFailedRank = -1;
  FailureAttribution failure;  // empty on success, timeout and desync
  std::string storeAddress;    // the address the job's store was bound to
  int storePort = 0;
  std::vector<RankStatus> ranks;
  std::vector<comm::RankTrace> traces;  // read on failure/timeout
  std::string summary;
  std::string traceDir;  // kept on failure
  double seconds = 0;
  // How the ranks started: "exec", "fork_server" (launchProgram through the
  // fork server) or "fork" (launchLocal).
  std::string spawn;
  // 0 success, 124 timeout, 125 desync, else the first failed rank's exit code (or
  // 128 + signal; under a mismatch 2 when that rank was stopped or exited 0),
  // never 0 on failure.
  int exitCode() const;
};

// Runs `argv` (argv[0] looked up in PATH) as nranks processes.
LaunchResult launchProgram(const LaunchOptions& opts, const std::vector<std::string>& argv);

struct RankContext {
  int rank;
  int worldSize;
};
// Forks nranks children running `body`; its return value is the exit code
// (an escaping exception prints its message and exits 1).
LaunchResult launchLocal(const LaunchOptions& opts, const std::function<int(const RankContext&)>& body);

}  // namespace moe::launch
