// The fork server (harness/launch/fork_server.h): refused in a process that
// already has threads, and a served program's ranks run its entry
// in-process (their exit code is the entry's return value).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "harness/launch/fork_server.h"
#include "harness/launch/launcher.h"

using namespace moe;

namespace {

// The served "program": exits with the number given as its first argument,
// so a forked rank and an exec'd /bin/true (always 0) are told apart.
int exitWithFirstArgument(int argc, char** argv) { return argc > 1 ? std::atoi(argv[1]) : 0; }

launch::LaunchResult launchTrue(launch::SpawnMode spawn, const std::string& code) {
  std::ostringstream out, err;
  launch::LaunchOptions o;
  o.nranks = 2;
  o.timeout = std::chrono::seconds(30);
  o.out = &out;
  o.err = &err;
  o.quiet = true;
  o.spawn = spawn;
  return launch::launchProgram(o, {"/bin/true", code});
}

// Runs `body` in a forked child that has one thread (the gtest process may
// have more by now); the child's exit code is the number of failed checks.
int inSingleThreadedChild(const std::function<int()>& body) {
  std::cout.flush();
  std::cerr.flush();
  const pid_t pid = fork();
  if (pid == 0) _exit(body());
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

#define CHILD_CHECK(cond, ...)                                              \
  do {                                                                      \
    if (!(cond)) {                                                          \
      std::cerr << "check failed: " #cond " " << __VA_ARGS__ << std::endl; \
      ++failed;                                                             \
    }                                                                       \
  } while (0)

TEST(ForkServer, RefusedWhenTheProcessAlreadyHasThreadsAndLaunchesExec) {
  EXPECT_EQ(inSingleThreadedChild([] {
              int failed = 0;
              std::atomic<bool> stop{false};
              std::thread t([&] {
                while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(1));
              });
              std::string why;
              CHILD_CHECK(!launch::startForkServer("/bin/true", &exitWithFirstArgument, &why), "");
              CHILD_CHECK(why.find("this process has 2 threads; fork() is only safe with one") != std::string::npos,
                          why);
              CHILD_CHECK(!launch::forkServerRunning(), "");
              CHILD_CHECK(launch::forkServerUnavailableReason() == why, launch::forkServerUnavailableReason());
              // Fork was asked for; the job runs anyway, exec'd.
              const auto r = launchTrue(launch::SpawnMode::kFork, "7");
              CHILD_CHECK(r.ok && r.spawn == "exec", r.spawn << " " << r.summary);
              stop = true;
              t.join();
              return failed;
            }),
            0);
}

TEST(ForkServer, RanksOfTheServedProgramRunItsEntryInProcess) {
  EXPECT_EQ(inSingleThreadedChild([] {
              int failed = 0;
              CHILD_CHECK(launch::countThreads() == 1, launch::countThreads());
              std::string why;
              CHILD_CHECK(launch::startForkServer("/bin/true", &exitWithFirstArgument, &why), why);
              CHILD_CHECK(launch::forkServerServes("/bin/true"), "");
              CHILD_CHECK(!launch::forkServerServes("/bin/false"), "");
              CHILD_CHECK(!launch::startForkServer("/bin/true", &exitWithFirstArgument, &why), "a second server");
              // Forked: the entry's 7 (exec'd /bin/true would exit 0).
              const auto forked = launchTrue(launch::SpawnMode::kFork, "7");
              CHILD_CHECK(forked.spawn == "fork_server", forked.spawn);
              CHILD_CHECK(forked.exitCode() == 7 && forked.firstFailedRank >= 0, forked.summary);
              const auto ok = launchTrue(launch::SpawnMode::kFork, "0");
              CHILD_CHECK(ok.ok, ok.summary);
              // Exec asked for: /bin/true itself.
              const auto execd = launchTrue(launch::SpawnMode::kExec, "7");
              CHILD_CHECK(execd.ok && execd.spawn == "exec", execd.spawn << " " << execd.summary);
              launch::stopForkServer();
              CHILD_CHECK(!launch::forkServerRunning(), "");
              const auto after = launchTrue(launch::SpawnMode::kFork, "7");
              CHILD_CHECK(after.ok && after.spawn == "exec", after.spawn);
              return failed;
            }),
            0);
}

TEST(SpawnMode, EnvironmentChoosesAndAMisspeltValueIsAUserErrorNamingIt) {
  unsetenv(launch::kSpawnEnv);
  EXPECT_EQ(launch::spawnModeFromEnvironment(launch::SpawnMode::kFork), launch::SpawnMode::kFork);
  setenv(launch::kSpawnEnv, "exec", 1);
  EXPECT_EQ(launch::spawnModeFromEnvironment(launch::SpawnMode::kFork), launch::SpawnMode::kExec);
  setenv(launch::kSpawnEnv, "zygote", 1);
  try {
    launch::spawnModeFromEnvironment(launch::SpawnMode::kFork);
    ADD_FAILURE() << "no error for MOE_HARNESS_SPAWN=zygote";
  } catch (const HarnessError& e) {
    EXPECT_STREQ(e.what(), "MOE_HARNESS_SPAWN: 'zygote' is not a way to start ranks (known: fork, exec)");
  }
  unsetenv(launch::kSpawnEnv);
}

}  // namespace
