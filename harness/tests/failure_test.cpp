// Root-cause attribution without ranks (harness/launch/failure.h): the
// classifier on every secondary pattern (texts as Gloo, c10d, NCCL and our
// stores word them) and on the project's own user errors, which are never
// secondary; the ordering of primary and secondary failures; the record a
// rank writes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>

#include "harness/launch/failure.h"

using namespace moe;
using launch::classifyError;
using launch::RankFailure;
namespace fs = std::filesystem;

namespace {

TEST(FailureClassifier, EverySecondaryPatternHasItsClass) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      // What C10dCommunicator::runWork makes of Gloo's pair errors.
      {"gloo all_gather on group 'fsdp:dp+ep' (global rank 0) failed: [/pytorch/third_party/gloo/gloo/transport/tcp/"
       "pair.cc:534] Connection closed by peer [127.0.0.1]:40213",
       "peer_gone"},
      {"gloo all_reduce on group 'world' (global rank 3) failed: [../third_party/gloo/gloo/transport/tcp/pair.cc:589] "
       "Read error [127.0.0.1]:51234: Connection reset by peer",
       "peer_gone"},
      {"gloo broadcast on group 'world' (global rank 1) failed: Write error [127.0.0.1]:1234: Broken pipe", "peer_gone"},
      {"gloo: rank 2 of 4 could not connect to its peers: connect [127.0.0.1]:4321: Connection refused", "peer_gone"},
      {"nccl all_reduce on group 'ep' (global rank 0) failed: NCCL error: remote process exited or there was a network "
       "error, NCCL version 2.27.3",
       "peer_gone"},
      {"nccl all_gather on group 'tp' (global rank 1) failed: ncclRemoteError: A call failed possibly due to a network "
       "error or a remote process exiting prematurely.",
       "peer_gone"},
      {"nccl all_reduce on group 'world' (global rank 2) failed: ProcessGroupNCCL is shut down: NCCL communicator has been "
       "aborted",
       "aborted"},
      {"gloo barrier on group 'world' (global rank 0) failed: Process group was aborted", "aborted"},
      {"TCP store: waiting for key 'gloo/world/rank_1' failed after 60000 ms: Socket Timeout", "store_timeout"},
      {"TCP store: waiting for 1 key(s) (first 'reference/ready') failed: wait timeout after 300000ms", "store_timeout"},
      {"file store /tmp/s: key 'gloo/world/0' did not appear within 60000 ms", "store_timeout"},
      {"gloo all_reduce on group 'dp' (global rank 1) failed: [../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:"
       "81] Timed out waiting 60000ms for recv operation to complete",
       "peer_timeout"},
      {"nccl all_reduce on group 'world' (global rank 0) failed: [Rank 0] Watchdog caught collective operation timeout: "
       "WorkNCCL(SeqNum=7, OpType=ALLREDUCE)",
       "peer_timeout"},
  };
  for (const auto& [message, cls] : cases) {
    EXPECT_EQ(classifyError(message), cls) << message;
    EXPECT_TRUE(launch::isSecondaryClass(cls)) << cls;
  }
  EXPECT_TRUE(launch::isSecondaryClass("stopped"));
}

TEST(FailureClassifier, UserErrorsAreNeverSecondary) {
  // Messages of the project's user errors (docs/errors.md), the probe's
  // among them: a rank that raises one failed on its own.
  const std::vector<std::string> userErrors = {
      "fsdp: model.embed_tokens.weight: placements [Shard(0), Shard(0)] give rank 1 local shape [16, 32] offset [16, 0], "
      "not the next row block of the plan-local tensor (local shape [32, 32] offset [0, 0])",
      "selftest: planted user error on rank 1 (--fault user-error)",
      "collective mismatch on group 'world': ranks 0,2,3 called all_reduce#2(float32, sum, numel 16); rank 1 called "
      "all_gather#2(float32, output numel 64)",
      "collective mismatch: all_to_all#3 split sizes disagree on group 'ep': rank 0 sends 5 elements to rank 1, but "
      "rank 1 expects 4 from rank 0",
      "RANK and WORLD_SIZE are not set: run this inside a job, e.g. `moe-harness launch -n 4 -- ...` or torchrun",
      "MASTER_ADDR and MASTER_PORT must be set for a job of 4 ranks",
      "TCP store client of 127.0.0.1:40000: refused: job token mismatch: this store belongs to another job",
      "unknown plan style \"colwsie\" (known styles: colwise, ep_router, rowwise)",
      "mesh {\"dp\":2,\"ep\":2}: the product of the dim sizes is 4 but the world has 2 rank(s)",
      "config: field num_experts_per_tok (3) exceeds num_experts (2)",
      "checkpoint model.safetensors: missing tensor model.norm.weight",
      "model.safetensors: unexpected end of file at byte 4096 (was the file truncated after it was opened?)",
      "gloo backend: all_reduce does not support dtype int32 (supported: float32, bfloat16, float16, float64, int64)",
      "--tolerance: loss_abs must be a number, got \"tiny\" in {\"loss_abs\":\"tiny\"}",
      "rank 1: rank0_broadcast manifests differ: group rank 0 broadcast 12 tensors (name hash 17), group rank 1 11",
  };
  for (const auto& m : userErrors) EXPECT_EQ(classifyError(m), "") << m;
  EXPECT_FALSE(launch::isSecondaryClass("user_error"));
  EXPECT_FALSE(launch::isSecondaryClass("internal_error"));
  EXPECT_FALSE(launch::isSecondaryClass("crash"));
  EXPECT_FALSE(launch::isSecondaryClass("exit"));
}

RankFailure failure(int rank, const std::string& cls, double time, const std::string& error = "") {
  RankFailure f;
  f.rank = rank;
  f.cls = cls;
  f.time = time;
  f.error = error.empty() ? cls + " of rank " + std::to_string(rank) : error;
  return f;
}

TEST(FailureAttribution, EarliestPrimaryIsTheRootEvenWhenASecondaryCameFirst) {
  // Rank 0's closed connection was recorded first, yet ranks 2 and 1 failed
  // on their own: rank 2 (the earlier) is the root cause, rank 1 also
  // primary, 0 and 3 secondary.
  auto a = launch::attributeFailures({failure(0, "peer_gone", 10.0), failure(1, "user_error", 10.5),
                                      failure(2, "user_error", 10.2), failure(3, "stopped", 11.0)});
  ASSERT_NE(a.root(), nullptr);
  EXPECT_EQ(a.root()->rank, 2);
  ASSERT_EQ(a.primary.size(), 2u);
  EXPECT_EQ(a.primary[1].rank, 1);
  ASSERT_EQ(a.secondary.size(), 2u);
  EXPECT_EQ(a.secondary[0].rank, 0);
  EXPECT_EQ(a.secondary[1].rank, 3);
  const auto j = a.toJson();
  EXPECT_EQ(j["primary"]["rank"], 2);
  EXPECT_EQ(j["primary"]["class"], "user_error");
  EXPECT_EQ(j["primary"]["error"], "user_error of rank 2");
  ASSERT_EQ(j["other_primary"].size(), 1u);
  EXPECT_EQ(j["other_primary"][0]["rank"], 1);
  ASSERT_EQ(j["secondary"].size(), 2u);
  EXPECT_EQ(j["secondary"][0]["class"], "peer_gone");
  const std::string d = a.describe(/*jobStart=*/10.0);
  EXPECT_EQ(d.find("  root cause: rank 2 (user_error, at 0.200 s): user_error of rank 2\n"), 0u) << d;
  EXPECT_NE(d.find("\n  also failed on its own: rank 1 (user_error, at 0.500 s): user_error of rank 1\n"), std::string::npos)
      << d;
  EXPECT_NE(d.find("\n  secondary (failed because a peer did): rank 0 [peer_gone]: peer_gone of rank 0; rank 3 [stopped]: "),
            std::string::npos)
      << d;
}

TEST(FailureAttribution, WithoutAPrimaryTheEarliestSecondaryNotStoppedByTheLauncher) {
  auto a = launch::attributeFailures({failure(3, "stopped", 1.0), failure(1, "peer_timeout", 2.0), failure(0, "peer_gone", 3.0)});
  ASSERT_NE(a.root(), nullptr);
  EXPECT_EQ(a.root()->rank, 1);
  EXPECT_TRUE(a.primary.empty());
  const auto j = a.toJson();
  EXPECT_EQ(j["primary"]["rank"], 1);
  EXPECT_EQ(j["secondary"].size(), 2u);  // 3 and 0, not the root again
  EXPECT_NE(a.describe(0).find("no rank failed on its own"), std::string::npos);
  EXPECT_EQ(launch::attributeFailures({}).root(), nullptr);
  EXPECT_TRUE(launch::attributeFailures({}).toJson().empty());
}

TEST(FailureRecord, ARankRecordsItsErrorWithTheTimeForTheLauncher) {
  const fs::path dir = fs::temp_directory_path() / ("moe-failure-record-" + std::to_string(getpid()));
  fs::create_directories(dir);
  setenv("RANK", "3", 1);
  setenv(launch::kTraceDirEnv, dir.c_str(), 1);
  const double before = static_cast<double>(std::time(nullptr)) - 1;
  launch::recordRankFailure("user_error", "planted");
  unsetenv("RANK");
  unsetenv(launch::kTraceDirEnv);
  auto r = launch::readRankFailureRecord(dir.string(), 3);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->rank, 3);
  EXPECT_EQ(r->kind, "user_error");
  EXPECT_EQ(r->message, "planted");
  EXPECT_GE(r->time, before);
  EXPECT_FALSE(launch::readRankFailureRecord(dir.string(), 2).has_value());
  launch::clearRankFailureRecords(dir.string(), 4);
  EXPECT_FALSE(launch::readRankFailureRecord(dir.string(), 3).has_value());
  // Outside a job (no trace directory) nothing is written and nothing throws.
  launch::recordRankFailure("user_error", "ignored");
  fs::remove_all(dir);
}

}  // namespace
