// The mutant registry and the mutation runner's classification, without
// ranks. The mutants themselves are proven by `moe-harness mutate` (ctest
// label `mutation`), which runs each one on real ranks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "common/error_of.h"
#include "harness/mutate/mutant_registry.h"

namespace moe::mutants {
namespace {
using testutil::errorOf;

TEST(MutantRegistry, OffByDefault) {
  // No mutant is active and every mutation point is null (the correct code).
  EXPECT_EQ(activeMutant(), "");
  const MutationPoints& p = points();
  EXPECT_EQ(p.placeParameter, nullptr);
  EXPECT_EQ(p.loaderPlacements, nullptr);
  EXPECT_EQ(p.afterLoadParam, nullptr);
  EXPECT_EQ(p.gradReduction, nullptr);
  EXPECT_EQ(p.auxStatsLocal, nullptr);
  EXPECT_EQ(p.reduceExpertOutputs, nullptr);
  EXPECT_EQ(p.dispatchCounts, nullptr);
  EXPECT_EQ(p.reducedGrad, nullptr);
  EXPECT_EQ(p.countsInNorm, nullptr);
  EXPECT_EQ(p.fsdpGroupDims, nullptr);
  EXPECT_EQ(p.zero3GroupInit, nullptr);
  // A default-constructed table is all-null too (what a fresh process has).
  MutationPoints fresh;
  EXPECT_EQ(std::memcmp(&fresh, &p, sizeof p), 0);
}

TEST(MutantRegistry, UnknownNameListsTheKnownOnes) {
  const std::string msg = errorOf([] { findMutant("no_such_mutant"); });
  EXPECT_NE(msg.find("unknown mutant 'no_such_mutant'"), std::string::npos) << msg;
  for (const auto& n : {"ep_rank0_broadcast_overwrite", "a2a_split_off_by_one", "router_unsynced",
                        "fsdp_experts_on_dp_group", "ep_zero3_mismatched_init"})
    EXPECT_NE(msg.find(n), std::string::npos) << msg;
  EXPECT_NE(errorOf([] { activateMutant("nope"); }).find("unknown mutant"), std::string::npos);
  EXPECT_EQ(activeMutant(), "");  // a failed activation leaves the table alone
}

TEST(MutantRegistry, EveryMutantIsComplete) {
  const std::set<std::string> checks = {"placement",     "expert_uniqueness",   "parity",       "communication",
                                        "desync",        "checkpoint_complete", "resume_parity"};
  std::set<std::string> names;
  ASSERT_GE(allMutants().size(), 12u);
  for (const auto& m : allMutants()) {
    SCOPED_TRACE(m.spec.name);
    EXPECT_TRUE(names.insert(m.spec.name).second) << "duplicate name";
    EXPECT_FALSE(m.spec.description.empty());
    EXPECT_FALSE(m.spec.injectionPoint.empty());
    EXPECT_TRUE(checks.count(m.spec.intendedCheck)) << m.spec.intendedCheck;
    EXPECT_NE(m.install, nullptr);
    ASSERT_FALSE(m.spec.runs.empty());
    for (const auto& r : m.spec.runs) {
      EXPECT_FALSE(r.id.empty());
      EXPECT_GE(r.nranks, 1);
      for (const char* flag : {"--config", "--mesh", "--plan", "--dtype", "--steps"})
        EXPECT_NE(std::find(r.args.begin(), r.args.end(), flag), r.args.end()) << flag;
      EXPECT_EQ(std::find(r.args.begin(), r.args.end(), "--mutant"), r.args.end())
          << "the runner adds --mutant itself";
    }
    // install() sets at least one mutation point.
    MutationPoints p;
    m.install(p);
    MutationPoints none;
    EXPECT_NE(std::memcmp(&p, &none, sizeof p), 0) << "install() sets no hook";
  }
  EXPECT_EQ(mutantSpecs().size(), allMutants().size());
}

// Activation is process-wide and once only: run it last in this binary's
// process (gtest_discover_tests runs each test in its own process).
TEST(MutantRegistry, ActivateSetsTheHooksOnce) {
  activateMutant("a2a_split_off_by_one");
  EXPECT_EQ(activeMutant(), "a2a_split_off_by_one");
  EXPECT_NE(points().dispatchCounts, nullptr);
  EXPECT_EQ(points().countsInNorm, nullptr);
  EXPECT_NE(errorOf([] { activateMutant("router_unsynced"); }).find("already active"), std::string::npos);
}

// ---- the runner's classification (harness/mutate) ----------------------------
mutate::RunOutcome runWith(std::vector<std::pair<std::string, bool>> checks) {
  mutate::RunOutcome r;
  r.spec.id = "cfg";
  r.verdict = std::all_of(checks.begin(), checks.end(), [](const auto& c) { return c.second; });
  r.checks = checks;
  for (const auto& [n, ok] : checks) r.explanations[n] = ok ? "fine" : n + " says why";
  return r;
}

mutate::MutantOutcome mutantWith(const std::string& intended, std::vector<mutate::RunOutcome> runs) {
  mutate::MutantOutcome m;
  m.spec.name = "m";
  m.spec.intendedCheck = intended;
  m.runs = std::move(runs);
  mutate::classify(m);
  return m;
}

TEST(MutationClassify, KilledByTheIntendedCheckEvenWhenOthersFailToo) {
  auto m = mutantWith("expert_uniqueness",
                      {runWith({{"placement", false}, {"expert_uniqueness", false}, {"parity", true}})});
  EXPECT_EQ(m.status, "killed");
  EXPECT_EQ(m.killedBy, "expert_uniqueness");
  EXPECT_EQ(m.message, "expert_uniqueness says why");
  EXPECT_EQ(m.failedChecks, (std::vector<std::string>{"expert_uniqueness", "placement"}));
}

TEST(MutationClassify, WrongCheckSurvivedCrashAndDesync) {
  EXPECT_EQ(mutantWith("parity", {runWith({{"placement", false}, {"parity", true}})}).status, "wrong_check");
  EXPECT_EQ(mutantWith("parity", {runWith({{"placement", true}, {"parity", true}})}).status, "survived");
  mutate::RunOutcome crash;
  crash.exitCode = 134;
  crash.error = "rank 1 killed by signal 6";
  EXPECT_EQ(mutantWith("parity", {crash}).status, "crashed");
  mutate::RunOutcome hang = crash;
  hang.timedOut = true;
  EXPECT_EQ(mutantWith("parity", {hang}).status, "timeout");
  mutate::RunOutcome desync = crash;
  desync.error = "collective mismatch on group 'world': ranks 0,2 called ...";
  // A desync is a kill only where it is the intended detection.
  EXPECT_EQ(mutantWith("parity", {desync}).status, "crashed");
  auto d = mutantWith("desync", {desync});
  EXPECT_EQ(d.status, "killed");
  EXPECT_EQ(d.killedBy, "desync");
  // The launcher's watchdog (calls on different groups) counts the same way...
  mutate::RunOutcome watchdog = crash;
  watchdog.exitCode = 125;
  watchdog.error = "collective desync: stopped after 6 s, no rank can make progress: ranks 0,2 are blocked in ...";
  EXPECT_EQ(mutantWith("desync", {watchdog}).status, "killed");
  EXPECT_EQ(mutantWith("parity", {watchdog}).status, "crashed");
  // ...but a rank that died, even with a divergence line, is not a desync.
  mutate::RunOutcome died = crash;
  died.error = "job failed: rank 1 killed by signal 6\ndivergence: rank 1 is done with all_reduce#3 on group world";
  EXPECT_EQ(mutantWith("desync", {died}).status, "crashed");
}

TEST(MutationReport, ScoreAndGreenness) {
  mutate::MutationReport r;
  r.mutants = {mutantWith("parity", {runWith({{"parity", false}})}),
               mutantWith("parity", {runWith({{"parity", true}})})};
  r.baseline = {runWith({{"parity", true}})};
  EXPECT_EQ(r.killed(), 1);
  EXPECT_DOUBLE_EQ(r.score(), 0.5);
  EXPECT_FALSE(r.passed());
  r.mutants.pop_back();
  EXPECT_TRUE(r.passed());
  r.baseline.push_back(runWith({{"parity", false}}));
  EXPECT_FALSE(r.baselinePassed());
  EXPECT_FALSE(r.passed());
  auto j = mutate::mutationJson(r)["mutation"];
  EXPECT_EQ(j["killed"], 1);
  EXPECT_EQ(j["total"], 1);
  EXPECT_EQ(j["mutants"][0]["status"], "killed");
  EXPECT_EQ(j["mutants"][0]["killed_by"], "parity");
  EXPECT_EQ(j["baseline_passed"], false);
}

}  // namespace
}  // namespace moe::mutants
