// The launcher against the real CLI binary and forked bodies: crashes,
// timeouts, exit codes, output prefixing, cleanup of every process. The
// `Spawn/` tests run the binary's subcommands both ways (exec'd, and forked
// from the fork server this test binary starts in its main(), which runs the
// same command line in-process: harness/launch/fork_server.h) and expect the
// same report from both.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "harness/cli/command_line.h"
#include "harness/launch/fork_server.h"
#include "harness/tests/run_command.h"
#include "harness/tests/rank_test_util.h"
#include "reference/io/expert_layout.h"
#include "reference/io/safetensors.h"
#include "reference/io/sharded_safetensors.h"

using namespace moe;
namespace fs = std::filesystem;

namespace {

const std::string kHarness = MOE_HARNESS_BIN;

struct ExecRun {
  launch::LaunchResult result;
  std::string out, err;
  double seconds;
  std::string all() const { return result.summary + "\n--- stdout\n" + out + "--- stderr\n" + err; }
};

// Runs `args` (a moe-harness command line) as n ranks, exec'd or forked
// from the fork server (a forked job that silently exec'd would test nothing:
// its result's spawn then differs, and the Spawn/ tests check it).
ExecRun execJob(int n, std::vector<std::string> args, int timeoutSeconds, const std::string& traceDir = "",
                launch::SpawnMode spawn = launch::SpawnMode::kExec,
                const std::function<void(launch::LaunchOptions&)>& tweak = {}) {
  std::ostringstream out, err;
  launch::LaunchOptions o;
  o.nranks = n;
  o.timeout = std::chrono::seconds(timeoutSeconds);
  o.killGrace = std::chrono::milliseconds(1000);
  o.out = &out;
  o.err = &err;
  o.quiet = true;
  o.traceDir = traceDir;
  o.spawn = spawn;
  if (tweak) tweak(o);
  args.insert(args.begin(), kHarness);
  auto t0 = std::chrono::steady_clock::now();
  ExecRun r{launch::launchProgram(o, args), "", "", 0};
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.out = out.str();
  r.err = err.str();
  return r;
}

const char* spawnKind(launch::SpawnMode m) { return m == launch::SpawnMode::kFork ? "fork_server" : "exec"; }

// The launcher tests that run moe-harness subcommands, once per way of
// starting ranks.
class Spawn : public ::testing::TestWithParam<launch::SpawnMode> {
 protected:
  ExecRun job(int n, std::vector<std::string> args, int timeoutSeconds, const std::string& traceDir = "",
              const std::function<void(launch::LaunchOptions&)>& tweak = {}) {
    ExecRun r = execJob(n, std::move(args), timeoutSeconds, traceDir, GetParam(), tweak);
    EXPECT_EQ(r.result.spawn, spawnKind(GetParam())) << launch::forkServerUnavailableReason();
    return r;
  }
};

fs::path tempDir(const std::string& tag) {
  fs::path d = fs::temp_directory_path() / ("moe-launcher-test-" + tag + "-" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Every rank wrote its pid; none of them may still exist.
void expectNoSurvivors(const fs::path& pidDir, int n) {
  for (int r = 0; r < n; ++r) {
    std::ifstream in(pidDir / ("rank" + std::to_string(r) + ".pid"));
    pid_t pid = 0;
    ASSERT_TRUE(in >> pid) << "rank " << r << " wrote no pid file";
    errno = 0;
    EXPECT_EQ(kill(pid, 0), -1) << "rank " << r << " (pid " << pid << ") survived the job";
    EXPECT_EQ(errno, ESRCH);
  }
}

TEST_P(Spawn, LauncherSelftestPassesOnFourRanksWithPrefixedOutput) {
  auto r = job(4, {"selftest"}, 120);
  ASSERT_TRUE(r.result.ok) << r.all();
  EXPECT_EQ(r.result.exitCode(), 0);
  EXPECT_NE(r.out.find("[rank 0] selftest: mesh {\"dp\":2,\"ep\":2}, 4 ranks, backend gloo: ok"), std::string::npos)
      << r.out;
}

TEST_P(Spawn, LauncherAbortOnRankTwoIsNamedAndNothingSurvives) {
  auto pids = tempDir("abort");
  auto r = job(4, {"selftest", "--fault", "abort", "--fault-rank", "2", "--pid-dir", pids.string()}, 60);
  ASSERT_FALSE(r.result.ok) << r.all();
  EXPECT_LT(r.seconds, 10.0) << r.all();
  EXPECT_EQ(r.result.firstFailedRank, 2) << r.all();
  EXPECT_EQ(r.result.ranks[2].signal, SIGABRT) << r.all();
  EXPECT_EQ(r.result.exitCode(), 128 + SIGABRT);
  EXPECT_NE(r.result.summary.find("job failed: rank 2 killed by signal 6 (SIGABRT)"), std::string::npos) << r.all();
  // The summary names the dead rank's last collective (from its trace file).
  EXPECT_NE(r.result.summary.find("its last collective: barrier#"), std::string::npos) << r.all();
  expectNoSurvivors(pids, 4);
  fs::remove_all(pids);
}

TEST_P(Spawn, LauncherHungRankTimesOutWithEveryRanksState) {
  auto pids = tempDir("hang");
  // 12 s: the three healthy ranks must start libtorch and reach the
  // all_reduce before the timeout, which took over 6 s with 4 ranks on 2
  // loaded cores (load average 14); the rank sleeping 60 s stays far beyond.
  auto r = job(4, {"selftest", "--fault", "sleep", "--sleep", "60", "--fault-rank", "1", "--pid-dir", pids.string()}, 12);
  ASSERT_TRUE(r.result.timedOut) << r.all();
  EXPECT_EQ(r.result.exitCode(), 124);
  EXPECT_LT(r.seconds, 25.0);  // the timeout plus teardown, far below the 60 s sleep
  const auto& s = r.result.summary;
  EXPECT_NE(s.find("job timed out after 12 s"), std::string::npos) << s;
  for (int k = 0; k < 4; ++k)
    EXPECT_NE(s.find("rank " + std::to_string(k) + ": last collective"), std::string::npos) << s;
  // Ranks 0,2,3 wait in the all_reduce that rank 1 never reaches.
  EXPECT_NE(s.find("ranks 0,2,3 are in all_reduce#"), std::string::npos) << s;
  EXPECT_NE(s.find("rank 1 is done with barrier#"), std::string::npos) << s;
  ASSERT_EQ(r.result.traces.size(), 4u);
  EXPECT_TRUE(fs::exists(r.result.traceDir + "/flight_recorder.json"));
  expectNoSurvivors(pids, 4);
  fs::remove_all(pids);
  fs::remove_all(r.result.traceDir);
}

TEST_P(Spawn, LauncherExitCodeOfFailedRankIsReturned) {
  auto r = job(3, {"selftest", "--fault", "exit", "--fault-rank", "1"}, 60);
  ASSERT_FALSE(r.result.ok);
  EXPECT_EQ(r.result.firstFailedRank, 1) << r.all();
  EXPECT_EQ(r.result.exitCode(), 3) << r.all();
  EXPECT_NE(r.result.summary.find("rank 1 exited with code 3"), std::string::npos) << r.all();
}

// Runs `argv` as it is (any program) as 2 quiet ranks.
ExecRun launchTwo(const std::vector<std::string>& argv, launch::SpawnMode spawn = launch::SpawnMode::kExec) {
  std::ostringstream out, err;
  launch::LaunchOptions o;
  o.nranks = 2;
  o.out = &out;
  o.err = &err;
  o.quiet = true;
  o.spawn = spawn;
  ExecRun r{launch::launchProgram(o, argv), "", "", 0};
  r.out = out.str();
  r.err = err.str();
  return r;
}

TEST(Launcher, MissingProgramFailsWith127) {
  auto run = launchTwo({"/nonexistent/program"});
  const auto& r = run.result;
  ASSERT_FALSE(r.ok);
  EXPECT_EQ(r.exitCode(), 127);
  EXPECT_NE(run.err.find("cannot execute /nonexistent/program"), std::string::npos) << run.err;
}

TEST_P(Spawn, LauncherConcurrentJobsDoNotCollide) {
  ExecRun a, b;
  std::thread ta([&] { a = job(2, {"selftest"}, 120); });
  std::thread tb([&] { b = job(2, {"selftest"}, 120); });
  ta.join();
  tb.join();
  EXPECT_TRUE(a.result.ok) << a.all();
  EXPECT_TRUE(b.result.ok) << b.all();
}

TEST(Launcher, ForkedBodyExceptionFailsTheRankWithItsMessage) {
  auto run = ranktest::runRanks(2, [](const launch::RankContext& ctx) -> int {
    if (ctx.rank == 1) moe::fail("planted failure on rank ", ctx.rank);
    return 0;
  });
  ASSERT_FALSE(run.result.ok);
  EXPECT_EQ(run.result.firstFailedRank, 1);
  EXPECT_NE(run.err.find("[rank 1] rank 1: error: planted failure on rank 1"), std::string::npos) << run.all();
}

TEST(Launcher, RanksSeeTorchrunEnvironment) {
  auto run = ranktest::runRanks(3, [](const launch::RankContext& ctx) {
    auto env = launch::rankEnvFromEnvironment();
    RANK_CHECK(env.rank == ctx.rank && env.worldSize == 3 && env.localRank == ctx.rank, "env");
    RANK_CHECK(env.agentStore && env.masterPort > 0 && env.masterAddr == "127.0.0.1", "store env");
    RANK_CHECK(std::getenv("MOE_HARNESS_TRACE_DIR") != nullptr, "trace dir");
    return 0;
  });
  ASSERT_TRUE(run.result.ok) << run.all();
}

// Root-cause attribution (issue 17 point 2, harness/launch/failure.h),
// through the binary with selftest's fault injection.

// Every failed rank other than those listed in `primaries` is secondary.
void expectSecondaryExcept(const launch::LaunchResult& r, const std::set<int>& primaries, int n) {
  std::set<int> seen;
  for (const auto& f : r.failure.secondary) {
    EXPECT_TRUE(f.secondary()) << f.cls;
    EXPECT_EQ(primaries.count(f.rank), 0u) << "rank " << f.rank << " is secondary: " << f.error;
    seen.insert(f.rank);
  }
  for (int k = 0; k < n; ++k) {
    if (!primaries.count(k)) {
      EXPECT_EQ(seen.count(k), 1u) << "rank " << k << " is not listed as secondary";
    }
  }
}

TEST_P(Spawn, AttributionOneRanksUserErrorIsTheRootCauseItsPeersErrorsAreSecondary) {
  auto r = job(4, {"selftest", "--fault", "user-error", "--fault-ranks", "1"}, 60);
  ASSERT_FALSE(r.result.ok) << r.all();
  EXPECT_EQ(r.result.firstFailedRank, 1) << r.all();
  EXPECT_EQ(r.result.exitCode(), 2) << r.all();
  ASSERT_EQ(r.result.failure.primary.size(), 1u) << r.all();
  const auto& p = r.result.failure.primary[0];
  EXPECT_EQ(p.rank, 1);
  EXPECT_EQ(p.cls, "user_error");
  EXPECT_EQ(p.error, "selftest: planted user error on rank 1 (--fault user-error)");
  expectSecondaryExcept(r.result, {1}, 4);
  // At least one peer failed in its collective because rank 1 was gone.
  bool peerGone = false;
  for (const auto& f : r.result.failure.secondary) peerGone |= f.cls == "peer_gone";
  EXPECT_TRUE(peerGone) << r.all();
  const auto& s = r.result.summary;
  EXPECT_EQ(s.find("job failed: rank 1 exited with code 2"), 0u) << s;
  EXPECT_NE(s.find("\n  root cause: rank 1 (user_error, at "), std::string::npos) << s;
  EXPECT_NE(s.find("): selftest: planted user error on rank 1 (--fault user-error)\n"), std::string::npos) << s;
  EXPECT_NE(s.find("\n  secondary (failed because a peer did): rank "), std::string::npos) << s;
  // flight_recorder.json carries the same attribution.
  std::ifstream in(r.result.traceDir + "/flight_recorder.json");
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j["first_failed_rank"], 1);
  EXPECT_EQ(j["failure"]["primary"]["rank"], 1);
  EXPECT_EQ(j["failure"]["secondary"].size(), 3u);
  fs::remove_all(r.result.traceDir);
}

TEST(Attribution, TwoRanksRaisingAtOnceTheEarlierIsTheRootBothAreListed) {
  // Rank 2 raises first, rank 1 0.3 s later (within the launcher's failure
  // grace): time decides, not the rank number.
  auto r = execJob(4, {"selftest", "--fault", "user-error", "--fault-ranks", "2,1", "--fault-stagger", "0.3"}, 60);
  ASSERT_FALSE(r.result.ok) << r.all();
  EXPECT_EQ(r.result.firstFailedRank, 2) << r.all();
  ASSERT_EQ(r.result.failure.primary.size(), 2u) << r.all();
  EXPECT_EQ(r.result.failure.primary[0].rank, 2);
  EXPECT_EQ(r.result.failure.primary[1].rank, 1);
  EXPECT_LT(r.result.failure.primary[0].time, r.result.failure.primary[1].time);
  for (const auto& p : r.result.failure.primary) EXPECT_EQ(p.cls, "user_error");
  expectSecondaryExcept(r.result, {1, 2}, 4);
  const auto& s = r.result.summary;
  EXPECT_EQ(s.find("job failed: rank 2 exited with code 2"), 0u) << s;
  EXPECT_NE(s.find("\n  also failed on its own: rank 1 (user_error, at "), std::string::npos) << s;
  fs::remove_all(r.result.traceDir);

  // Unstaggered, either may be first; both are primary, the others not.
  auto both = execJob(4, {"selftest", "--fault", "user-error", "--fault-ranks", "1,2"}, 60);
  ASSERT_EQ(both.result.failure.primary.size(), 2u) << both.all();
  EXPECT_TRUE(both.result.firstFailedRank == 1 || both.result.firstFailedRank == 2) << both.all();
  expectSecondaryExcept(both.result, {1, 2}, 4);
  fs::remove_all(both.result.traceDir);
}

TEST_P(Spawn, AttributionARankAbortingMidCollectiveIsPrimaryTheOthersSecondary) {
  auto r = job(4, {"selftest", "--fault", "abort", "--fault-rank", "3"}, 60);
  ASSERT_FALSE(r.result.ok) << r.all();
  EXPECT_EQ(r.result.firstFailedRank, 3) << r.all();
  EXPECT_EQ(r.result.exitCode(), 128 + SIGABRT);
  ASSERT_EQ(r.result.failure.primary.size(), 1u) << r.all();
  EXPECT_EQ(r.result.failure.primary[0].cls, "crash");
  EXPECT_EQ(r.result.failure.primary[0].error, "killed by signal 6 (SIGABRT)");
  expectSecondaryExcept(r.result, {3}, 4);
  EXPECT_EQ(r.result.summary.find("job failed: rank 3 killed by signal 6 (SIGABRT)"), 0u) << r.all();
  fs::remove_all(r.result.traceDir);
}

// A rendezvous nobody else can join (issue 17 point 5).

TEST(JobRendezvous, StoreIsOnLoopbackAndRanksGetTheJobToken) {
  auto run = ranktest::runRanks(2, [](const launch::RankContext&) {
    const char* token = std::getenv("MOE_HARNESS_JOB_TOKEN");
    RANK_CHECK(token != nullptr && std::string(token).size() == 32, "token");
    RANK_CHECK(std::string(std::getenv("MASTER_ADDR")) == "127.0.0.1", "MASTER_ADDR ", std::getenv("MASTER_ADDR"));
    auto world = ranktest::rankWorld();  // the right token connects
    world->barrier();
    return 0;
  });
  ASSERT_TRUE(run.result.ok) << run.all();
  EXPECT_EQ(run.result.storeAddress, "127.0.0.1");
  EXPECT_GT(run.result.storePort, 0);
}

TEST(JobRendezvous, ARankWithAnotherJobsTokenIsRefused) {
  // A stale rank of another job that reaches this job's port: refused before
  // it touches a key, with the reason.
  auto run = ranktest::runRanks(2, [](const launch::RankContext&) {
    setenv("MOE_HARNESS_JOB_TOKEN", "0123456789abcdef0123456789abcdef", 1);
    try {
      ranktest::rankWorld();
    } catch (const HarnessError& e) {
      const std::string m = e.what();
      RANK_CHECK(m.find("refused: job token mismatch: this store belongs to another job") != std::string::npos, m);
      return 0;
    }
    std::cerr << "a rank with a wrong token joined the job" << std::endl;
    return 1;
  });
  ASSERT_TRUE(run.result.ok) << run.all();
}

TEST(JobRendezvous, IfaceBindsTheStoreAndTheRanksGlooDevice) {
  // `launch --iface lo`: the store on lo's address, selftest's Gloo devices
  // on lo through MOE_HARNESS_IFACE.
  const moe::testing::Proc p = moe::testing::runCommand(kHarness + " launch -n 2 --iface lo --timeout 60 -- /bin/sh -c 'echo addr=$MASTER_ADDR iface=$MOE_HARNESS_IFACE && exec " +
    kHarness + " selftest'");
  EXPECT_EQ(p.code, 0) << p.out;
  EXPECT_NE(p.out.find("[rank 1] addr=127.0.0.1 iface=lo"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find("backend gloo: ok"), std::string::npos) << p.out;
}

}  // namespace

namespace {

const std::string kSource = MOE_SOURCE_DIR;

TEST_P(Spawn, RunPlanDumpShardsWritesEachRanksLocalTensorsWithPlacements) {
  auto dir = tempDir("dump");
  auto r = job(2, {"run-plan", "--config", kSource + "/cases/configs/tiny_moe.json", "--mesh", "{\"ep\":2}",
                       "--plan", kSource + "/cases/plans/ep.json", "--dtype", "fp32", "--steps", "1",
                       "--dump-shards", dir.string()},
                   120);
  ASSERT_TRUE(r.result.ok) << r.all();
  EXPECT_NE(r.out.find("\"passed\": true"), std::string::npos) << r.out;
  for (int rank = 0; rank < 2; ++rank) {
    io::SafetensorsReader reader((dir / ("rank" + std::to_string(rank) + ".safetensors")).string());
    // tiny_moe.json: 8 experts, moe_intermediate_size 16, hidden 32; ep=2
    // holds 4 experts per rank, dense and attention weights whole.
    const std::string gateUp = "model.layers.1.mlp.experts.gate_up_proj";
    EXPECT_EQ(reader.shape(gateUp), (std::vector<int64_t>{4, 32, 32}));
    auto meta = nlohmann::json::parse(reader.metadata().at(gateUp));
    EXPECT_EQ(meta["placements"], "[Shard(0)]");
    EXPECT_EQ(meta["global_shape"], (std::vector<int64_t>{8, 32, 32}));
    EXPECT_EQ(meta["style"], "grouped_gemm");
    EXPECT_EQ(reader.shape("model.layers.0.self_attn.q_proj.weight"), (std::vector<int64_t>{32, 32}));
    EXPECT_EQ(nlohmann::json::parse(reader.metadata().at("model.norm.weight"))["placements"], "[Replicate()]");
  }
  fs::remove_all(dir);
}

TEST(RunPlan, UnknownStyleIsAClearErrorListingTheKnownOnes) {
  auto dir = tempDir("badplan");
  std::ofstream(dir / "plan.json") << R"([["model.layers.*.mlp.experts", "grouped_gem"]])";
  auto r = execJob(2, {"run-plan", "--config", kSource + "/cases/configs/tiny_moe.json", "--mesh", "{\"ep\":2}",
                       "--plan", (dir / "plan.json").string(), "--steps", "1"},
                   60);
  ASSERT_FALSE(r.result.ok);
  EXPECT_EQ(r.result.exitCode(), 2) << r.all();
  EXPECT_NE(r.err.find("unknown plan style \"grouped_gem\" (known styles: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("grouped_gemm"), std::string::npos) << r.err;
  fs::remove_all(dir);
}

// The weights (seed 4) the reference command writes for `config` into
// `out`, fused, by name; empty (the failure recorded) when the command fails.
std::vector<std::pair<std::string, at::Tensor>> referenceWeights(const std::string& config, const fs::path& out) {
  auto ref = execJob(1, {"reference", "--config", config, "--steps", "1", "--dtype", "fp32", "--seed", "4", "--out",
                         out.string()},
                     120);
  EXPECT_TRUE(ref.result.ok) << ref.all();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  if (!ref.result.ok) return tensors;
  io::SafetensorsReader fused((out / "model.safetensors").string());
  for (auto& [name, t] : io::readAll(fused)) tensors.push_back({name, t});
  return tensors;
}

TEST(RunPlan, Rank0BroadcastFromAHubCheckpointPassesAndIsNamedInTheJson) {
  // A hub-layout (per-expert) checkpoint: the reference command's fused
  // model.safetensors rewritten with toHubLayout.
  auto dir = tempDir("load");
  const std::string config = kSource + "/cases/configs/tiny_moe.json";
  const auto tensors = referenceWeights(config, dir / "ref");
  ASSERT_FALSE(tensors.empty());
  fs::create_directories(dir / "hub");
  io::writeSafetensors((dir / "hub" / "model.safetensors").string(), io::toHubLayout(tensors));
  auto r = execJob(2, {"run-plan", "--config", config, "--mesh", "{\"ep\":2}", "--plan",
                       kSource + "/cases/plans/ep.json", "--steps", "1", "--checkpoint", (dir / "hub").string(),
                       "--load", "rank0_broadcast"},
                   120);
  ASSERT_TRUE(r.result.ok) << r.all();
  EXPECT_NE(r.out.find("\"load\": \"rank0_broadcast\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"passed\": true"), std::string::npos) << r.out;
  fs::remove_all(dir);
}

TEST(RunPlan, ShardedHubCheckpointLoadsOnEp2AndPasses) {
  // The reference command's fused model.safetensors rewritten as Hugging
  // Face shards in the hub layout: every rank reads its experts' slices from
  // whichever shard holds them.
  auto dir = tempDir("sharded");
  const std::string config = kSource + "/cases/configs/tiny_moe.json";
  const auto tensors = referenceWeights(config, dir / "ref");
  ASSERT_FALSE(tensors.empty());
  const auto shards = io::writeShardedSafetensors((dir / "hub").string(), io::toHubLayout(tensors),
                                                  /*maxShardBytes=*/16 << 10);
  ASSERT_GE(shards.size(), 3u);
  auto r = execJob(2, {"run-plan", "--config", config, "--mesh", "{\"ep\":2}", "--plan",
                       kSource + "/cases/plans/ep.json", "--steps", "1", "--checkpoint", (dir / "hub").string()},
                   120);
  ASSERT_TRUE(r.result.ok) << r.all();
  EXPECT_NE(r.out.find("\"passed\": true"), std::string::npos) << r.out;
  fs::remove_all(dir);
}

TEST(RunPlan, UnknownLoadingPathIsAClearErrorListingTheKnownOnes) {
  auto r = execJob(2, {"run-plan", "--config", kSource + "/cases/configs/tiny_moe.json", "--mesh", "{\"ep\":2}",
                       "--plan", kSource + "/cases/plans/ep.json", "--steps", "1", "--load", "rank0"},
                   60);
  ASSERT_FALSE(r.result.ok);
  EXPECT_EQ(r.result.exitCode(), 2) << r.all();
  EXPECT_NE(r.err.find("unknown loading path 'rank0' (known: init_then_load, rank0_broadcast, shard_on_read)"),
            std::string::npos)
      << r.err;
}

TEST(RunPlan, ToleranceWithANonNumberIsAUserErrorNamingTheField) {
  auto r = execJob(1, {"run-plan", "--config", kSource + "/cases/configs/tiny_moe.json", "--mesh", "{\"ep\":1}",
                       "--plan", kSource + "/cases/plans/ep.json", "--steps", "1", "--tolerance",
                       "{\"loss_abs\": \"tiny\", \"rel_norm\": 0.02}"},
                   60);
  ASSERT_FALSE(r.result.ok);
  EXPECT_EQ(r.result.exitCode(), 2) << r.all();  // not 3 (internal error)
  EXPECT_NE(r.err.find("--tolerance: loss_abs must be a number, got \"tiny\""), std::string::npos) << r.err;
}

// The device lane through the CLI: `--device cuda` where CUDA cannot run is
// a user error (exit 2) naming why, on every rank, before any collective.
TEST(RunPlan, DeviceCudaWithoutCudaIsAUserErrorNamingTheReason) {
  std::string why;
  if (comm::cudaUsable(1, &why)) GTEST_SKIP() << "a GPU is usable here: this test is about machines without one";
  auto r = execJob(2, {"run-plan", "--config", kSource + "/cases/configs/tiny_moe.json", "--mesh", "{\"ep\":2}",
                       "--plan", kSource + "/cases/plans/ep.json", "--steps", "1", "--device", "cuda"},
                   60);
  ASSERT_FALSE(r.result.ok);
  EXPECT_EQ(r.result.exitCode(), 2) << r.all();
  EXPECT_NE(r.err.find("CUDA is not available in this process: " + why), std::string::npos) << r.err;
}

TEST(RunPlan, NcclWithDeviceCpuIsAUserError) {
  auto r = execJob(1, {"run-plan", "--config", kSource + "/cases/configs/tiny_moe.json", "--mesh", "{\"ep\":1}",
                       "--plan", kSource + "/cases/plans/ep.json", "--steps", "1", "--backend", "nccl", "--device",
                       "cpu"},
                   60);
  ASSERT_FALSE(r.result.ok);
  EXPECT_EQ(r.result.exitCode(), 2) << r.all();
  EXPECT_NE(r.err.find("--device/--backend: device cpu with backend nccl: NCCL moves CUDA tensors only"),
            std::string::npos)
      << r.err;
}

// On the CPU lane nothing changes, and the result says where it ran.
TEST(RunPlan, ResultRecordsTheDeviceLane) {
  auto r = execJob(2, {"run-plan", "--config", kSource + "/cases/configs/tiny_moe.json", "--mesh", "{\"ep\":2}",
                       "--plan", kSource + "/cases/plans/ep.json", "--steps", "2", "--device", "cpu"},
                   120);
  ASSERT_TRUE(r.result.ok) << r.all();
  EXPECT_NE(r.out.find("\"device\": \"cpu\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"passed\": true"), std::string::npos) << r.out;
}

}  // namespace

namespace {

// The two paths side by side: the same crash and the same hang, reported
// alike (numbers such as times and sequence positions aside).
std::string withoutNumbers(const std::string& s) {
  static const std::regex number("[0-9]+(\\.[0-9]+)?(e-?[0-9]+)?");
  return std::regex_replace(s, number, "N");
}

TEST(SpawnPaths, ACrashedForkedRankIsReportedExactlyLikeAnExecdOne) {
  const std::vector<std::string> args = {"selftest", "--fault", "abort", "--fault-rank", "2"};
  auto e = execJob(4, args, 60, "", launch::SpawnMode::kExec);
  auto f = execJob(4, args, 60, "", launch::SpawnMode::kFork);
  ASSERT_EQ(e.result.spawn, "exec");
  ASSERT_EQ(f.result.spawn, "fork_server") << launch::forkServerUnavailableReason();
  EXPECT_EQ(f.result.exitCode(), e.result.exitCode());
  EXPECT_EQ(f.result.firstFailedRank, e.result.firstFailedRank);
  ASSERT_EQ(f.result.ranks.size(), e.result.ranks.size());
  EXPECT_EQ(f.result.ranks[2].describe(), e.result.ranks[2].describe());
  const auto firstLine = [](const std::string& s) { return s.substr(0, s.find('\n')); };
  EXPECT_EQ(withoutNumbers(firstLine(f.result.summary)), withoutNumbers(firstLine(e.result.summary)))
      << "exec:\n" << e.result.summary << "\nfork:\n" << f.result.summary;
  EXPECT_EQ(f.result.failure.primary.size(), e.result.failure.primary.size());
  if (!f.result.failure.primary.empty() && !e.result.failure.primary.empty()) {
    EXPECT_EQ(f.result.failure.primary[0].cls, e.result.failure.primary[0].cls);
    EXPECT_EQ(f.result.failure.primary[0].error, e.result.failure.primary[0].error);
  }
  fs::remove_all(e.result.traceDir);
  fs::remove_all(f.result.traceDir);
}

TEST(SpawnPaths, AHungForkedRankIsReportedExactlyLikeAnExecdOne) {
  const std::vector<std::string> args = {"selftest", "--fault", "sleep", "--sleep", "60", "--fault-rank", "1"};
  // 12 s as in HungRankTimesOutWithEveryRanksState (exec'd ranks under load).
  auto e = execJob(4, args, 12, "", launch::SpawnMode::kExec);
  auto f = execJob(4, args, 12, "", launch::SpawnMode::kFork);
  ASSERT_EQ(f.result.spawn, "fork_server") << launch::forkServerUnavailableReason();
  ASSERT_TRUE(e.result.timedOut) << e.all();
  ASSERT_TRUE(f.result.timedOut) << f.all();
  EXPECT_EQ(f.result.exitCode(), e.result.exitCode());
  // Every line of the timeout report: each rank's state, the divergence.
  const auto head = [](const std::string& s) { return s.substr(0, s.find("flight recorder JSON")); };
  EXPECT_EQ(withoutNumbers(head(f.result.summary)), withoutNumbers(head(e.result.summary)))
      << "exec:\n" << e.result.summary << "\nfork:\n" << f.result.summary;
  fs::remove_all(e.result.traceDir);
  fs::remove_all(f.result.traceDir);
}

// What a forked rank sees is what an exec'd one sees: the launcher's current
// environment (not the fork server's, which is a copy of the process at its
// start), the launcher's working directory, the launcher as parent, its own
// process group.
TEST_P(Spawn, ARankSeesTheLaunchersEnvironmentDirectoryAndIsItsChild) {
  auto dir = tempDir(std::string("env-") + spawnKind(GetParam()));
  const fs::path oldCwd = fs::current_path();
  fs::current_path(dir);
  // run-plan records MOE_HARNESS_GIT_REVISION in its result; set after the
  // fork server started. The relative --result-json lands in the cwd.
  setenv("MOE_HARNESS_GIT_REVISION", "set-after-the-fork-server-started", 1);
  auto r = job(2, {"run-plan", "--config", std::string(MOE_SOURCE_DIR) + "/cases/configs/tiny_moe.json", "--mesh",
                   "{\"ep\":2}", "--plan", std::string(MOE_SOURCE_DIR) + "/cases/plans/ep.json", "--steps", "1",
                   "--result-json", "result.json"},
               120);
  unsetenv("MOE_HARNESS_GIT_REVISION");
  EXPECT_TRUE(r.result.ok) << r.all();
  std::ifstream in(dir / "result.json");
  ASSERT_TRUE(in.good()) << "no result.json in the launcher's working directory " << dir;
  EXPECT_EQ(nlohmann::json::parse(in)["environment"]["git_revision"], "set-after-the-fork-server-started");

  // Rank 1 sleeps after writing its pid: read its /proc entries, then kill it.
  std::string stat1, cwd1;
  pid_t pid1 = 0;
  std::thread observer([&] {
    for (int i = 0; i < 600 && pid1 == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::ifstream in(dir / "rank1.pid");
      if (!(in >> pid1)) pid1 = 0;
    }
    if (pid1 == 0) return;
    std::ifstream stat("/proc/" + std::to_string(pid1) + "/stat");
    std::getline(stat, stat1);
    std::error_code ec;
    cwd1 = fs::read_symlink("/proc/" + std::to_string(pid1) + "/cwd", ec).string();
    kill(pid1, SIGKILL);
  });
  auto h = job(2, {"selftest", "--fault", "sleep", "--sleep", "60", "--fault-rank", "1", "--pid-dir", "."}, 60);
  observer.join();
  fs::current_path(oldCwd);
  ASSERT_NE(pid1, 0) << h.all();
  EXPECT_EQ(h.result.firstFailedRank, 1) << h.all();
  EXPECT_EQ(h.result.ranks[1].describe(), "killed by signal 9 (SIGKILL)") << h.all();
  EXPECT_EQ(h.result.ranks[1].pid, pid1);
  EXPECT_EQ(cwd1, fs::canonical(dir).string());
  // /proc/PID/stat: "pid (comm) state ppid pgrp ...".
  std::istringstream st(stat1.substr(stat1.rfind(')') + 2));
  std::string state;
  pid_t ppid = 0, pgrp = 0;
  st >> state >> ppid >> pgrp;
  EXPECT_EQ(ppid, getpid()) << stat1;
  EXPECT_EQ(pgrp, pid1) << stat1;
  fs::remove_all(dir);
  fs::remove_all(h.result.traceDir);
}

// Fork is asked for a program the server does not serve: the ranks exec.
TEST(SpawnPaths, ARequestedForkFallsBackToExecForAnotherProgram) {
  auto r = launchTwo({"/bin/true"}, launch::SpawnMode::kFork);
  EXPECT_TRUE(r.result.ok) << r.all();
  EXPECT_EQ(r.result.spawn, "exec");  // the server runs moe-harness's command line, not /bin/true
}

INSTANTIATE_TEST_SUITE_P(Spawn, Spawn, ::testing::Values(launch::SpawnMode::kExec, launch::SpawnMode::kFork),
                         [](const ::testing::TestParamInfo<launch::SpawnMode>& i) {
                           return std::string(launch::spawnModeName(i.param));
                         });

}  // namespace

// The fork server first, while this process has one thread: its ranks run
// moe-harness's command line in-process, as `moe-harness run`'s do.
int main(int argc, char** argv) {
  std::string why;
  if (!moe::launch::startForkServer(MOE_HARNESS_BIN, &moe::cli::runCommandLine, &why))
    std::cerr << "launcher_tests: no fork server (" << why << "): the fork tests fail" << std::endl;
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
