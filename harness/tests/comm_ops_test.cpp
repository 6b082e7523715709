// Every collective against a single-process ground truth, on real gloo ranks:
// world sizes 1-4, float32 and bfloat16 (plus float16/float64/int64
// reductions), on the world, on mesh sub-groups and on a reordered subgroup,
// with uneven all_gather/reduce_scatter (torch.chunk splits, empty pieces)
// and uneven all_to_all with zero splits. See collective_check.h.
#include <gtest/gtest.h>

#include "harness/comm/collective_check.h"
#include "harness/comm/flight_recorder.h"
#include "harness/mesh/device_mesh.h"
#include "harness/tests/rank_test_util.h"

using namespace moe;

namespace {

int checkGroup(comm::Communicator& c) {
  auto rep = comm::checkCollectives(c);
  for (const auto& f : rep.failures) std::cerr << f << std::endl;
  RANK_CHECK(rep.ok(), rep.failures.size(), " failures on group ", c.name());
  RANK_CHECK(rep.passed > 40, "only ", rep.passed, " checks ran on group ", c.name());
  return 0;
}

class CommOps : public ::testing::TestWithParam<int> {};

TEST_P(CommOps, WorldAndSubgroupsMatchGroundTruth) {
  const int n = GetParam();
  auto run = ranktest::runRanks(n, [n](const launch::RankContext& ctx) {
    auto world = ranktest::rankWorld();
    if (int rc = checkGroup(*world)) return rc;
    if (n >= 2) {
      // Reversed order: group rank 0 is the last world rank.
      auto g = world->subgroup("reversed_pair", {n - 1, 0});
      if (g) {
        RANK_CHECK(g->globalRanks() == std::vector<int>({n - 1, 0}), "group ranks");
        RANK_CHECK(g->rank() == (ctx.rank == 0 ? 1 : 0), "group rank ", g->rank());
        if (int rc = checkGroup(*g)) return rc;
      } else {
        RANK_CHECK(ctx.rank != 0 && ctx.rank != n - 1, "member got no group");
      }
    }
    if (n == 4) {
      mesh::DeviceMesh m(world, mesh::DeviceMesh::parse("{\"dp\":2,\"ep\":2}"));
      if (int rc = checkGroup(*m.comm("ep"))) return rc;
      if (int rc = checkGroup(*m.comm("dp"))) return rc;
    }
    return 0;
  });
  ASSERT_TRUE(run.result.ok) << run.all();
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, CommOps, ::testing::Values(1, 2, 3, 4));

// A communicator that returns wrong data: proves the ground-truth checks can
// fail. It forwards to a real communicator and then corrupts one element (or
// misroutes rows) of every output.
class CorruptingComm : public comm::Communicator {
 public:
  explicit CorruptingComm(std::shared_ptr<comm::Communicator> inner)
      : Communicator("corrupting", inner->rank(), inner->globalRanks()), inner_(std::move(inner)) {
    setVerify(false);
  }
  std::string backendName() const override { return "corrupting"; }

 protected:
  static void poke(at::Tensor& t) {
    if (t.numel()) t.view({-1}).narrow(0, t.numel() - 1, 1).add_(1);
  }
  void doAllReduce(at::Tensor& t, comm::ReduceOp op) override { inner_->allReduce(t, op); poke(t); }
  void doBroadcast(at::Tensor& t, int root) override { inner_->broadcast(t, root); poke(t); }
  void doBarrier() override { inner_->barrier(); }
  void doSend(const at::Tensor& t, int peer) override { inner_->send(t, peer); }
  void doRecv(at::Tensor& t, int peer) override { inner_->recv(t, peer); poke(t); }
  void doAllGather(at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& rows) override {
    inner_->allGather(out, in, rows);
    if (out.size(0) >= 2) out.copy_(out.flip(0));  // rows in the wrong rank order
  }
  void doReduceScatter(at::Tensor& out, const at::Tensor& in, comm::ReduceOp op,
                       const std::vector<int64_t>& rows) override {
    inner_->reduceScatter(out, in, op, rows);
    poke(out);
  }
  void doAllToAll(at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& o,
                  const std::vector<int64_t>& i) override {
    inner_->allToAllSingle(out, in, o, i);
    poke(out);
  }
  std::shared_ptr<Communicator> doSplit(const std::string&, const std::vector<std::vector<int>>&, int) override {
    return nullptr;
  }

 private:
  std::shared_ptr<comm::Communicator> inner_;
};

TEST(CollectiveCheck, FailsOnWrongResults) {
  auto run = ranktest::runRanks(2, [](const launch::RankContext&) {
    auto world = ranktest::rankWorld();
    CorruptingComm bad(world);
    auto rep = comm::checkCollectives(bad);
    for (const char* op : {"all_reduce", "broadcast", "all_gather", "reduce_scatter", "all_to_all", "send/recv"}) {
      bool found = false;
      for (const auto& f : rep.failures) found |= f.find(std::string(" ") + op + " ") != std::string::npos;
      RANK_CHECK(found, "the check missed corrupted ", op, " results");
    }
    // Messages name rank, element and both values.
    RANK_CHECK(rep.failures[0].find("rank ") == 0 && rep.failures[0].find("expected") != std::string::npos,
               rep.failures[0]);
    return 0;
  });
  ASSERT_TRUE(run.result.ok) << run.all();
}

// Logical byte counters equal the analytical volumes of flight_recorder.h,
// computed here from the tensor sizes.
TEST(CommCounters, MatchAnalyticalVolumes) {
  auto run = ranktest::runRanks(4, [](const launch::RankContext& ctx) {
    auto world = ranktest::rankWorld();
    auto& fr = comm::FlightRecorder::instance();
    fr.resetCounters();
    const int64_t n = 4, f = 4;  // ranks, sizeof(float)
    at::Tensor a = at::ones({10, 3});
    world->allReduce(a);
    at::Tensor in = at::ones({2, 3}), out = at::empty({8, 3});
    world->allGather(out, in);
    at::Tensor rs = at::empty({2, 3});
    world->reduceScatter(rs, out);
    // all_to_all: rank r sends r+1 rows to every rank.
    std::vector<int64_t> inS(4, ctx.rank + 1), outS = {1, 2, 3, 4};
    at::Tensor ain = at::ones({4 * (ctx.rank + 1), 3}), aout = at::empty({10, 3});
    world->allToAllSingle(aout, ain, outS, inS);
    auto ar = fr.counter("world", comm::OpType::kAllReduce);
    RANK_CHECK(ar.calls == 1 && ar.bytesSent == 2 * (n - 1) * 30 * f / n, "all_reduce bytes ", ar.bytesSent);
    auto ag = fr.counter("world", comm::OpType::kAllGather);
    RANK_CHECK(ag.bytesRecv == (n - 1) * 6 * f && ag.bytesSent == ag.bytesRecv, "all_gather bytes ", ag.bytesRecv);
    auto sc = fr.counter("world", comm::OpType::kReduceScatter);
    RANK_CHECK(sc.bytesSent == (n - 1) * 6 * f, "reduce_scatter bytes ", sc.bytesSent);
    auto aa = fr.counter("world", comm::OpType::kAllToAll);
    int64_t recvRows = 1 + 2 + 3 + 4 - (ctx.rank + 1);
    RANK_CHECK(aa.bytesSent == 3 * (ctx.rank + 1) * 3 * f, "all_to_all sent ", aa.bytesSent);
    RANK_CHECK(aa.bytesRecv == recvRows * 3 * f, "all_to_all recv ", aa.bytesRecv);
    return 0;
  });
  ASSERT_TRUE(run.result.ok) << run.all();
}

TEST(DeviceMeshRanks, GroupsFollowRowMajorLayout) {
  auto run = ranktest::runRanks(4, [](const launch::RankContext& ctx) {
    auto world = ranktest::rankWorld();
    mesh::DeviceMesh m(world, mesh::DeviceMesh::parse("{\"edp\":2,\"ep\":2}"));
    const int r = ctx.rank;
    // Row-major, last dim fastest: ep groups {0,1},{2,3}; edp groups {0,2},{1,3}.
    std::vector<int> ep = {r / 2 * 2, r / 2 * 2 + 1}, edp = {r % 2, r % 2 + 2};
    RANK_CHECK(m.comm("ep")->globalRanks() == ep, "ep group of rank ", r);
    RANK_CHECK(m.comm("edp")->globalRanks() == edp, "edp group of rank ", r);
    RANK_CHECK(m.comm(std::vector<std::string>{"edp", "ep"})->size() == 4, "dense dp group");
    RANK_CHECK(m.comm("tp")->size() == 1, "absent dim gives a group of one");
    at::Tensor t = at::full({1}, static_cast<int64_t>(r), at::kLong);
    m.comm("ep")->allReduce(t);
    RANK_CHECK(t.item<int64_t>() == ep[0] + ep[1], "ep all_reduce of ranks gave ", t.item<int64_t>());
    return 0;
  });
  ASSERT_TRUE(run.result.ok) << run.all();
}

// Ranks told different device lanes fail before the first collective, on
// every rank, naming both ranks and both choices (the descriptor exchange
// through the job's store at rendezvous), instead of hanging in two
// different rendezvous or exchanging tensors of different devices.
void expectLaneDisagreement(const comm::CommOptions& rank1, const std::string& rank1Text) {
  auto run = ranktest::runRanks(2, [&](const launch::RankContext& ctx) {
    comm::CommOptions o = ctx.rank == 1 ? rank1 : comm::CommOptions{};
    try {
      ranktest::rankWorld(o);
    } catch (const HarnessError& e) {
      const std::string what = e.what();
      RANK_CHECK(what.find("the ranks disagree on the device lane before the first collective: rank 0 has backend "
                           "gloo, device cpu, rank 1 has " + rank1Text) != std::string::npos,
                 "unexpected error: ", what);
      RANK_CHECK(comm::FlightRecorder::instance().snapshot().empty(), "a collective ran before the check");
      return 0;
    }
    std::cerr << "rank " << ctx.rank << " created its world despite the disagreement" << std::endl;
    return 1;
  });
  ASSERT_TRUE(run.result.ok) << run.all();
}

TEST(DeviceLane, RanksThatDisagreeOnTheDeviceFailBeforeTheFirstCollective) {
  comm::CommOptions cuda;
  cuda.deviceType = "cuda";
  expectLaneDisagreement(cuda, "backend gloo, device cuda");
}

TEST(DeviceLane, RanksThatDisagreeOnTheBackendFailBeforeTheFirstCollective) {
  comm::CommOptions nccl;
  nccl.backend = "nccl";  // its device defaults to cuda
  expectLaneDisagreement(nccl, "backend nccl, device cuda");
}

}  // namespace
