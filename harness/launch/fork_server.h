#pragma once
// The fork server ("zygote"): ranks of the harness's own subcommands start in
// milliseconds by forking a process that has libtorch loaded and its
// operators registered, instead of exec'ing the binary again (each exec'd
// rank pays libtorch's ~0.6 s start-up).
//
// Why a server: fork() is only safe in a process with one thread, and the
// process that launches jobs (`run`, `mutate`) has several (its worker
// threads, each job's store thread, libtorch's pools). The server is forked
// at the top of main(), while the process still has one thread, stays
// single-threaded for its whole life and forks each rank on request.
//
// Contract:
//  - startForkServer() must be called before anything starts a thread. It
//    refuses (returns false, nothing started, the reason in `why` and in
//    forkServerUnavailableReason()) when the process already has more than
//    one thread (counted in /proc/self/task), when a server runs already, or
//    when a system call fails. Launches then exec (LaunchResult::spawn).
//  - A rank is forked by a short-lived child of the server that exits at
//    once, and startForkServer() makes the caller a child subreaper
//    (PR_SET_CHILD_SUBREAPER): the rank is re-parented to the caller before
//    forkRankViaServer() returns. The launcher therefore waits for it,
//    signals its process group and is the parent its PR_SET_PDEATHSIG
//    watches, exactly as for a rank it forked and exec'd itself.
//  - The server dies with its caller (PR_SET_PDEATHSIG, and it exits when its
//    socket closes); a rank dies with the launcher (PR_SET_PDEATHSIG, set
//    once it is the launcher's child) and exits 112 when the launcher goes
//    away before sending the store address, 111 when its parent is not the
//    launcher, so no process of a job outlives it.
//  - A forked rank runs in its own process group with the request's stdout,
//    stderr, environment (replaced whole) and working directory, then calls
//    `entry(argc, argv)` with the request's argv and leaves with _exit() of
//    its return value once std::cout, std::cerr and stdio are flushed
//    (static destructors are skipped: libtorch's take ~0.2 s; nothing the
//    harness leaves behind depends on them).
//    One visible difference: /proc/PID/environ shows a process's environment
//    as it was at exec, so for a forked rank it shows the server's (what
//    getenv returns in the rank is the request's).
#include <sys/types.h>

#include <string>
#include <vector>

namespace moe::launch {

// Runs one rank's command line in the forked process; returns its exit code.
using ForkedMain = int (*)(int argc, char** argv);

// `program`: the binary whose command line `entry` runs in-process; only
// launches of this program (LaunchOptions::spawn = kFork, argv[0] naming it)
// go through the server.
bool startForkServer(const std::string& program, ForkedMain entry, std::string* why = nullptr);
// Closes the socket and waits for the server to exit (tests).
void stopForkServer();
bool forkServerRunning();
// Whether launches of `program` (a path, looked up as exec would) can fork.
bool forkServerServes(const std::string& program);
// Why no server runs ("" when one does, "not started" before any try).
std::string forkServerUnavailableReason();
// Threads of this process (entries of /proc/self/task).
int countThreads();

// What the launcher hands to a rank forked by the server.
struct ForkedRankSpec {
  int outFd = -1;   // becomes the rank's stdout
  int errFd = -1;   // becomes its stderr
  int portFd = -1;  // the launcher writes "ADDRESS PORT\n" here (readStoreAddressLine)
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "NAME=VALUE", the rank's whole environment (MASTER_* come from portFd)
  std::string cwd;
};
// Forks a rank from the server; returns its pid (a child of this process, the
// leader of its own process group). The fds stay open here; the caller closes
// its copies. Throws HarnessError when no server runs or it failed to fork.
pid_t forkRankViaServer(const ForkedRankSpec& spec);

// A rank's side of the store-address handshake shared by every way of
// starting ranks: reads "ADDRESS PORT\n" from `fd` (stops at the newline, not
// at EOF) and sets MASTER_ADDR and MASTER_PORT. False when the launcher closed
// the pipe without an address (it could not start the store, or died).
bool readStoreAddressLine(int fd);

}  // namespace moe::launch
