// Desync detection: ranks that call different collectives, or pass
// inconsistent sizes, fail fast with a message naming what each rank called,
// instead of hanging or reducing mismatched buffers.
#include <gtest/gtest.h>

#include <chrono>

#include "harness/comm/communicator.h"
#include "harness/comm/flight_recorder.h"
#include "harness/tests/rank_test_util.h"

using namespace moe;

namespace {

// Both verification modes (communicator.h) must report every mismatch the
// same way: "trace" (the launcher compares the traces, the default under our
// launcher) and "in_band" (the fingerprint exchange, MOE_HARNESS_VERIFY=1).
class Mismatch : public ::testing::TestWithParam<std::string> {
 protected:
  bool trace() const { return GetParam() == "trace"; }
  std::function<void(launch::LaunchOptions&)> mode() const {
    const bool t = trace();
    return [t](launch::LaunchOptions& o) {
      if (!t) o.env["MOE_HARNESS_VERIFY"] = "1";
    };
  }

  // Runs `body` on 4 ranks, expects the job to fail within 10 s (not by
  // timeout) and returns the combined output.
  std::string expectFastFailure(const std::function<void(comm::Communicator&, int rank)>& body) {
    auto t0 = std::chrono::steady_clock::now();
    auto run = ranktest::runRanks(4, [&](const launch::RankContext& ctx) {
      auto world = ranktest::rankWorld();
      at::Tensor warm = at::ones({4});
      world->allReduce(warm);  // a matching collective first: the sequence numbers advance together
      try {
        body(*world, ctx.rank);
      } catch (const comm::CollectiveMismatch& e) {
        std::cerr << "mismatch: " << e.what() << std::endl;
        return 3;
      }
      return 0;
    }, /*timeoutSeconds=*/20, mode());
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_FALSE(run.result.ok);
    EXPECT_FALSE(run.result.timedOut) << run.all();
    EXPECT_LT(secs, 10.0) << run.all();
    EXPECT_EQ(run.result.verify, trace() ? "trace" : "");
    EXPECT_EQ(!run.result.mismatch.empty(), trace()) << run.all();
    // Every rank detected it: its flight recorder shows the call failed with
    // the mismatch (the launcher may stop ranks before they exit by themselves).
    // Under trace verification a rank whose mismatched call completed before
    // the verdict reports it as it exits (launchLocal: exit 2).
    const auto& first = run.result.ranks[run.result.firstFailedRank];
    EXPECT_TRUE(first.exited) << run.all();
    EXPECT_TRUE(first.exitCode == 3 || (trace() && first.exitCode == 2)) << run.all();
    for (const auto& t : run.result.traces) {
      EXPECT_FALSE(t.records.empty()) << "rank " << t.rank;
      if (t.records.empty()) continue;
      EXPECT_EQ(t.records.back().state, static_cast<int32_t>(comm::CallState::kFailed)) << "rank " << t.rank << run.all();
      EXPECT_NE(std::string(t.records.back().error).find("mismatch"), std::string::npos) << t.records.back().error;
    }
    return run.all();
  }
};

INSTANTIATE_TEST_SUITE_P(Verify, Mismatch, ::testing::Values("trace", "in_band"),
                         [](const auto& info) { return info.param; });

TEST_P(Mismatch, AllGatherVersusAllReduceNamesBoth) {
  std::string out = expectFastFailure([](comm::Communicator& w, int rank) {
    at::Tensor in = at::ones({16});
    if (rank == 1) {
      at::Tensor out = at::empty({64});
      w.allGather(out, in);
    } else {
      w.allReduce(in);
    }
  });
  EXPECT_NE(out.find("rank 1 called all_gather#2"), std::string::npos) << out;
  EXPECT_NE(out.find("ranks 0,2,3 called all_reduce#2"), std::string::npos) << out;
}

TEST_P(Mismatch, InconsistentAllToAllSplits) {
  std::string out = expectFastFailure([](comm::Communicator& w, int rank) {
    // Rank 2 sends 2 rows to rank 0, which expects 1 from it.
    std::vector<int64_t> inS(4, 1), outS(4, 1);
    if (rank == 2) inS[0] = 2;
    at::Tensor in = at::ones({rank == 2 ? 5 : 4, 3}), out = at::empty({4, 3});
    w.allToAllSingle(out, in, outS, inS);
  });
  EXPECT_NE(out.find("rank 2 sends 6 elements to rank 0, but rank 0 expects 3 from rank 2"), std::string::npos) << out;
}

TEST_P(Mismatch, DifferentReduceOps) {
  std::string out = expectFastFailure([](comm::Communicator& w, int rank) {
    at::Tensor t = at::ones({8});
    w.allReduce(t, rank == 3 ? comm::ReduceOp::kMax : comm::ReduceOp::kSum);
  });
  EXPECT_NE(out.find("rank 3 called all_reduce#2(float32, max, numel 8)"), std::string::npos) << out;
}

TEST_P(Mismatch, DifferentNumelAndDtype) {
  std::string out = expectFastFailure([](comm::Communicator& w, int rank) {
    at::Tensor t = rank == 0 ? at::ones({9}) : at::ones({8}, rank == 1 ? at::kBFloat16 : at::kFloat);
    w.allReduce(t);
  });
  EXPECT_NE(out.find("rank 0 called all_reduce#2(float32, sum, numel 9)"), std::string::npos) << out;
  EXPECT_NE(out.find("rank 1 called all_reduce#2(bfloat16, sum, numel 8)"), std::string::npos) << out;
}

TEST_P(Mismatch, ExtraCollectiveOnOneRank) {
  // Rank 0 issues one collective more than the others: the sequence numbers
  // of the next call disagree.
  std::string out = expectFastFailure([](comm::Communicator& w, int rank) {
    at::Tensor t = at::ones({4});
    if (rank == 0) w.broadcast(t, 0);
    w.allReduce(t);
  });
  EXPECT_NE(out.find("rank 0 called broadcast#2"), std::string::npos) << out;
}

// Trace verification at the launcher's level: two ranks call different
// collectives (op, dtype, numel, all_to_all splits). Every rank's own
// report names both calls, the job's headline is the mismatch (not a
// backend error, a timeout or a stop) and it ends well within the timeout.
struct TwoRankCase {
  const char* name;
  std::function<void(comm::Communicator&, int rank)> body;
  std::vector<std::string> named;  // what the verdict must name
};

class TraceMismatch : public ::testing::TestWithParam<TwoRankCase> {};

TEST_P(TraceMismatch, EveryRankReportsBothCallsAndTheJobEndsFast) {
  const auto& c = GetParam();
  const auto t0 = std::chrono::steady_clock::now();
  auto run = ranktest::runRanks(2, [&](const launch::RankContext& ctx) {
    auto world = ranktest::rankWorld();
    try {
      c.body(*world, ctx.rank);
      // A collective whose buffers happened to fit may complete: the next
      // one (or the exit) still reports the verdict.
      at::Tensor t = at::ones({2});
      world->allReduce(t);
    } catch (const comm::CollectiveMismatch& e) {
      std::cerr << "mismatch: " << e.what() << std::endl;
      return 3;
    }
    return 0;
  }, /*timeoutSeconds=*/30);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(run.result.ok) << run.all();
  EXPECT_FALSE(run.result.timedOut);
  EXPECT_FALSE(run.result.desync);
  EXPECT_EQ(run.result.verify, "trace");
  EXPECT_LT(secs, 5.0) << run.all();
  const std::string& verdict = run.result.mismatch;
  for (const auto& n : c.named) EXPECT_NE(verdict.find(n), std::string::npos) << n << "\n" << run.all();
  EXPECT_EQ(run.result.summary.rfind("job failed: " + verdict + "\n", 0), 0u) << run.result.summary;
  EXPECT_NE(run.result.exitCode(), 0);
  for (int r = 0; r < 2; ++r) {
    // Its own report on stderr (prefixed by the launcher), from the
    // collective it waited in or from its exit.
    const std::string mine = "[rank " + std::to_string(r) + "] ";
    const bool reported = run.err.find(mine + "mismatch: " + verdict) != std::string::npos ||
                          run.err.find(mine + "rank " + std::to_string(r) + ": error: " + verdict) != std::string::npos;
    EXPECT_TRUE(reported) << "rank " << r << " did not report the verdict\n" << run.all();
  }
  // The attribution blames the mismatch on every failed rank.
  const auto j = run.result.failure.toJson();
  ASSERT_TRUE(j.contains("primary")) << run.all();
  EXPECT_EQ(j["primary"]["error"], verdict);
  for (const auto& f : j["secondary"]) EXPECT_EQ(f["error"], verdict);
}

INSTANTIATE_TEST_SUITE_P(
    Verify, TraceMismatch,
    ::testing::Values(
        TwoRankCase{"op",
                    [](comm::Communicator& w, int rank) {
                      at::Tensor t = at::ones({8});
                      if (rank == 0) w.allReduce(t);
                      else w.broadcast(t, 0);
                    },
                    {"rank 0 called all_reduce#1(float32, sum, numel 8)", "rank 1 called broadcast#1(float32, root 0, numel 8)"}},
        TwoRankCase{"dtype",
                    [](comm::Communicator& w, int rank) {
                      at::Tensor t = at::ones({8}, rank == 0 ? at::kFloat : at::kBFloat16);
                      w.allReduce(t);
                    },
                    {"rank 0 called all_reduce#1(float32, sum, numel 8)", "rank 1 called all_reduce#1(bfloat16, sum, numel 8)"}},
        TwoRankCase{"numel",
                    [](comm::Communicator& w, int rank) {
                      at::Tensor t = at::ones({rank == 0 ? 8 : 12});
                      w.allReduce(t);
                    },
                    {"rank 0 called all_reduce#1(float32, sum, numel 8)", "rank 1 called all_reduce#1(float32, sum, numel 12)"}},
        TwoRankCase{"splits",
                    [](comm::Communicator& w, int rank) {
                      // Rank 1 sends 2 rows to rank 0, which expects 1.
                      std::vector<int64_t> inS = {1, 1}, outS = {1, 1};
                      if (rank == 1) inS[0] = 2;
                      at::Tensor in = at::ones({rank == 1 ? 3 : 2, 4}), out = at::empty({2, 4});
                      w.allToAllSingle(out, in, outS, inS);
                    },
                    {"all_to_all#1 split sizes disagree on group 'world': rank 1 sends 8 elements to rank 0, but "
                     "rank 0 expects 4 from rank 1"}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Desync, MismatchedSendRecv) {
  auto run = ranktest::runRanks(2, [](const launch::RankContext& ctx) {
    auto world = ranktest::rankWorld();
    try {
      if (ctx.rank == 0) world->send(at::ones({5}), 1);
      else {
        at::Tensor t = at::empty({4});
        world->recv(t, 0);
      }
    } catch (const comm::CollectiveMismatch& e) {
      std::cerr << "mismatch: " << e.what() << std::endl;
      return 3;
    }
    return 0;
  }, 20);
  ASSERT_FALSE(run.result.ok);
  EXPECT_NE(run.err.find("rank 0 sends float32 numel 5, rank 1 receives float32 numel 4"), std::string::npos)
      << run.all();
}

TEST(Desync, WithVerificationOffTheFingerprintIsNotExchanged) {
  // The same mismatch without verification is not caught by the base class
  // (it may hang or corrupt, which is why verification is on by default): the
  // rank times out inside gloo instead. Only checks that no CollectiveMismatch
  // is raised, with a short gloo timeout.
  auto run = ranktest::runRanks(2, [](const launch::RankContext& ctx) {
    comm::CommOptions o;
    o.verify = false;
    at::set_num_threads(1);
    o.timeout = std::chrono::seconds(2);
    auto world = launch::initWorld(launch::rankEnvFromEnvironment(), o);
    try {
      at::Tensor t = at::ones({4});
      if (ctx.rank == 0) world->broadcast(t, 0);
      else world->barrier();
    } catch (const comm::CollectiveMismatch&) {
      return 3;
    } catch (const std::exception&) {
      return 4;  // gloo error or timeout
    }
    return 0;
  }, 30);
  for (const auto& st : run.result.ranks) EXPECT_NE(st.exitCode, 3) << run.all();
}

// Rank 2 enters a collective on a subgroup while the others are in one on
// the world: no common fingerprint exchange, so no rank can raise a mismatch.
int differentGroupsBody(const launch::RankContext& ctx) {
  auto world = ranktest::rankWorld();
  auto ep = world->split("ep", {{0, 1}, {2, 3}});
  at::Tensor t = at::ones({4});
  if (ctx.rank == 2) {
    at::Tensor out = at::empty({8});
    ep->allGather(out, t);
  } else {
    world->allReduce(t);
  }
  return 0;
}

TEST(Desync, DifferentGroupsAreStoppedAsADesyncNamingEveryBlockedCall) {
  // The launcher's watchdog proves the deadlock from the traces and stops
  // the job long before the communication timeout (30 s) or the job's (60 s).
  const auto t0 = std::chrono::steady_clock::now();
  auto run = ranktest::runRanks(4, differentGroupsBody, /*timeoutSeconds=*/60);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(run.result.desync) << run.all() << run.result.summary;
  EXPECT_FALSE(run.result.timedOut);
  EXPECT_EQ(run.result.exitCode(), 125);
  EXPECT_LT(secs, 20.0) << run.result.summary;
  const auto& s = run.result.summary;
  EXPECT_EQ(s.rfind("collective desync: ", 0), 0u) << s;
  EXPECT_NE(s.find("rank 2 is blocked in all_gather#1 on group ep waiting for rank 3"), std::string::npos) << s;
  EXPECT_NE(s.find("ranks 0,1,3 are blocked in all_reduce#1 on group world waiting for rank 2"), std::string::npos) << s;
  for (int r = 0; r < 4; ++r) EXPECT_NE(s.find("  rank " + std::to_string(r) + " ("), std::string::npos) << s;  // trace table
}

TEST(Desync, WithTheWatchdogOffDifferentGroupsTimeOutWithDivergenceReport) {
  auto run = ranktest::runRanks(4, differentGroupsBody, /*timeoutSeconds=*/4,
                                [](launch::LaunchOptions& o) { o.desyncGrace = std::chrono::milliseconds(0); });
  ASSERT_TRUE(run.result.timedOut) << run.all();
  EXPECT_FALSE(run.result.desync);
  EXPECT_EQ(run.result.exitCode(), 124);
  const auto& s = run.result.summary;
  EXPECT_NE(s.find("rank 2 is in all_gather#1 on group ep"), std::string::npos) << s;
  EXPECT_NE(s.find("ranks 0,1,3 are in all_reduce#1 on group world"), std::string::npos) << s;
  for (int r = 0; r < 4; ++r) EXPECT_NE(s.find("rank " + std::to_string(r) + ": last collective"), std::string::npos) << s;
}

}  // namespace
