// `moe-harness` exit codes (README "Exit codes", docs/errors.md), each
// produced by running the binary: 0 success, 1 a failed check, 2 a user
// error (a rejected command line included), 3 an internal error, 77
// skipped, 124 a job timeout, 125 a proven collective desync.
#include <gtest/gtest.h>

#include "harness/tests/run_command.h"
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>

namespace {

const std::string kHarness = MOE_HARNESS_BIN;
const std::string kSrc = MOE_SOURCE_DIR;

using moe::testing::has;
using moe::testing::Proc;
// `moe-harness ARGS`
Proc run(const std::string& args) { return moe::testing::runCommand(kHarness + " " + args); }

std::string runPlan(int ranks, const std::string& mesh, const std::string& extra) {
  return "launch -n " + std::to_string(ranks) + " --timeout 240 -- " + kHarness + " run-plan --config " + kSrc +
         "/cases/configs/tiny_moe.json --mesh '" + mesh + "' --plan " + kSrc + "/cases/plans/ep.json --steps 1 " +
         extra;
}

TEST(ExitCodes, Success0) {
  const Proc p = run(runPlan(1, "{\"ep\":1}", ""));
  EXPECT_EQ(p.code, 0) << p.out;
  EXPECT_EQ(run("checks").code, 0);
  EXPECT_EQ(run("--help").code, 0);
}

TEST(ExitCodes, FailedCheck1) {
  // A planted bug its check kills: the run finishes with a negative verdict.
  const Proc p = run(runPlan(2, "{\"ep\":2}", "--mutant aux_loss_local_scope"));
  EXPECT_EQ(p.code, 1) << p.out;
  EXPECT_TRUE(has(p, "\"check\": \"parity\"")) << p.out;
}

TEST(ExitCodes, UserError2) {
  // A HarnessError: run-plan outside a job.
  Proc p = run("run-plan --config " + kSrc + "/cases/configs/tiny_moe.json --mesh '{\"ep\":1}' --plan " + kSrc +
               "/cases/plans/ep.json --steps 1");
  EXPECT_EQ(p.code, 2) << p.out;
  EXPECT_TRUE(has(p, "moe-harness: error: RANK and WORLD_SIZE are not set")) << p.out;
  // A rejected command line (CLI11): a value of the wrong type, an unknown
  // option, a missing required option, a value outside its set.
  for (const std::string& args : {"reference --config " + kSrc + "/cases/configs/tiny_moe.json --steps abc --out /tmp/x",
                                  std::string("checks --no-such-option"), std::string("reference --steps 1"),
                                  std::string("launch -n 0 -- true")}) {
    p = run(args);
    EXPECT_EQ(p.code, 2) << args << "\n" << p.out;
    EXPECT_TRUE(has(p, "Run with --help for more information.")) << args << "\n" << p.out;
  }
  p = run("no-such-command");
  EXPECT_EQ(p.code, 2) << p.out;
}

TEST(ExitCodes, InternalError3) {
  // No user input reaches an internal error (MOE_ASSERT) by design: the
  // test-only fault raises one in a rank, which main maps to 3, and launch
  // passes the rank's code on.
  const Proc p = run("launch -n 1 --timeout 60 -- " + kHarness + " selftest --fault internal --fault-rank 0");
  EXPECT_EQ(p.code, 3) << p.out;
  EXPECT_TRUE(has(p, "moe-harness: internal error: internal error at")) << p.out;
}

TEST(ExitCodes, Skipped77) {
  const Proc p = run("launch -n 2 --timeout 120 -- " + kHarness + " selftest --backend nccl");
  if (p.code == 0) GTEST_SKIP() << "NCCL is usable here: nothing to skip";
  EXPECT_EQ(p.code, 77) << p.out;
  EXPECT_TRUE(has(p, "SKIPPED")) << p.out;
}

TEST(ExitCodes, Timeout124) {
  // Rank 1 computes (sleeps) outside any collective: no deadlock to prove,
  // so the job timeout stops it.
  const Proc p = run("launch -n 2 --timeout 3 --kill-grace 1 -- " + kHarness + " selftest --fault sleep --fault-rank 1 --sleep 60");
  EXPECT_EQ(p.code, 124) << p.out;
  EXPECT_TRUE(has(p, "job timed out after")) << p.out;
}

TEST(ExitCodes, Desync125) {
  const Proc p = run("launch -n 2 --timeout 120 -- " + kHarness + " selftest --fault desync --fault-rank 1");
  EXPECT_EQ(p.code, 125) << p.out;
  EXPECT_TRUE(has(p, "collective desync")) << p.out;
}

}  // namespace
