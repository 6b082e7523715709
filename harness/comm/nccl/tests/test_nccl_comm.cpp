// NCCL backend: every op against a local ground truth for world sizes 1, 2
// and 4, through the same checks as the gloo backend (collective_check.h:
// fp32 and bf16, uneven all_gather/reduce_scatter, uneven all_to_all with
// zero splits, send/recv), plus NCCL-specific split and device handling.
// One test per (world size, concern) keeps the skip cost low: each test is
// a process paying libtorch's start-up.
//
// These tests need one GPU per rank. Without them (no driver, too few
// devices) each test is SKIPPED with ncclUsableImpl's reason (a failure under
// MOE_HARNESS_REQUIRE_GPU=1); it never passes. The probe's own test, which
// runs everywhere, is nccl_probe_test.cpp (label unit).
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "common/gpu_requirement.h"
#include "harness/comm/collective_check.h"
#include "harness/comm/nccl/nccl_communicator.h"
#include "harness/launch/launcher.h"
#include "harness/launch/rank_env.h"

namespace moe::comm {
namespace {

// What a rank body gets: its world communicator and where to put tensors.
struct Rank {
  Communicator& comm;
  int rank;
  int world;
  at::Device device;
  at::ScalarType dtype;
};

using RankBody = std::function<void(Rank&)>;

// Runs `body` on `world` ranks forked by the launcher, each with its NCCL
// world communicator on cuda:LOCAL_RANK. A rank reports failure by throwing
// (gtest assertions do not cross fork); the launcher's summary names it.
void runRanks(int world, at::ScalarType dtype, const RankBody& body) {
  launch::LaunchOptions lo;
  lo.nranks = world;
  lo.timeout = std::chrono::seconds(180);
  const launch::LaunchResult result = launch::launchLocal(lo, [&](const launch::RankContext& ctx) {
    const launch::RankEnv env = launch::rankEnvFromEnvironment();
    CommOptions opts;
    opts.backend = "nccl";
    opts.timeout = std::chrono::seconds(120);
    auto comm = launch::initWorld(env, opts);
    Rank r{*comm, ctx.rank, ctx.worldSize,
           at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env.localRank)), dtype};
    body(r);
    comm->barrier();  // nobody tears down NCCL while a peer still uses it
    return 0;
  });
  ASSERT_TRUE(result.ok) << result.summary;
}

// CPU float64 tensor of `shape` with element i = value(i) (flat index).
at::Tensor make(at::IntArrayRef shape, const std::function<double(int64_t)>& value) {
  at::Tensor t = at::empty(shape, at::kDouble);
  double* p = t.data_ptr<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = value(i);
  return t;
}

at::Tensor onDevice(const Rank& r, const at::Tensor& cpu) {
  return cpu.to(r.dtype).to(r.device).contiguous();
}

// Exact comparison (all test values are exact in fp32 and bf16); the message
// names the rank, the tensor, the element and both values.
void expectEqual(const Rank& r, const std::string& what, const at::Tensor& got,
                 const at::Tensor& want) {
  const at::Tensor g = got.to(at::kCPU).to(at::kDouble).contiguous();
  if (g.sizes() != want.sizes())
    fail("rank ", r.rank, ": ", what, " shape ", g.sizes(), " vs expected ", want.sizes());
  const double* gp = g.data_ptr<double>();
  const double* wp = want.data_ptr<double>();
  for (int64_t i = 0; i < g.numel(); ++i)
    if (gp[i] != wp[i])
      fail("rank ", r.rank, ": ", what, " element ", i, " is ", gp[i], " vs expected ", wp[i]);
}

class NcclCommTest : public ::testing::TestWithParam<int> {
 protected:
  // Every test first asks whether the machine can run it at all.
  void SetUp() override {
    std::string reason;
    if (!ncclUsableImpl(world(), &reason)) MOE_GPU_UNAVAILABLE(reason);
  }
  int world() const { return GetParam(); }
  void run(const RankBody& body) { runRanks(world(), at::kFloat, body); }
};

}  // namespace

TEST_P(NcclCommTest, EveryCollectiveMatchesGroundTruth) {
  run([](Rank& r) {
    CollectiveCheckOptions opts;
    opts.device = r.device;
    auto check = [&](Communicator& c) {
      auto rep = checkCollectives(c, opts);
      if (!rep.ok()) fail(rep.failures.size(), " failures, first: ", rep.failures.front());
    };
    check(r.comm);
    if (r.world >= 2) {
      std::vector<int> reversed;
      for (int q = r.world - 1; q >= 0; --q) reversed.push_back(q);
      check(*r.comm.subgroup("reversed_all", reversed));
    }
  });
}

TEST_P(NcclCommTest, SplitEvenOddAndReversed) {
  run([](Rank& r) {
    const int w = r.world;
    // Even and odd ranks; each child's ranks follow the list order.
    std::vector<std::vector<int>> groups(w > 1 ? 2 : 1);
    for (int q = 0; q < w; ++q) groups[q % 2].push_back(q);
    auto child = r.comm.split("parity", groups);
    if (child == nullptr) fail("rank ", r.rank, ": split 'parity' returned no communicator");
    const std::vector<int>& mine = groups[r.rank % 2];
    if (child->size() != static_cast<int>(mine.size()) || child->rank() != r.rank / 2 ||
        child->globalRanks() != mine)
      fail("rank ", r.rank, ": 'parity' child is rank ", child->rank(), " of ", child->size(),
           " vs expected rank ", r.rank / 2, " of ", mine.size());
    at::Tensor t = onDevice(r, make({4}, [&](int64_t i) { return (r.rank + 1) * (1.0 + i); }));
    child->allReduce(t);
    double memberSum = 0;
    for (int q : mine) memberSum += q + 1;
    expectEqual(r, "allReduce on 'parity'", t,
                make({4}, [&](int64_t i) { return memberSum * (1.0 + i); }));

    // Reversed list: child rank 0 is world rank w - 1.
    std::vector<int> reversed(w);
    for (int q = 0; q < w; ++q) reversed[q] = w - 1 - q;
    auto rev = r.comm.subgroup("reversed", reversed);
    if (rev == nullptr || rev->rank() != w - 1 - r.rank)
      fail("rank ", r.rank, ": 'reversed' child rank ", rev ? rev->rank() : -1, " vs expected ",
           w - 1 - r.rank);
    at::Tensor b = onDevice(r, make({3}, [&](int64_t i) { return r.rank * 16.0 + i; }));
    rev->broadcast(b, /*root=*/0);
    expectEqual(r, "broadcast on 'reversed' from its rank 0", b,
                make({3}, [&](int64_t i) { return (w - 1) * 16.0 + i; }));

    // Only rank 0: everyone else gets nullptr.
    auto solo = r.comm.subgroup("solo", {0});
    if ((solo != nullptr) != (r.rank == 0))
      fail("rank ", r.rank, ": subgroup {0} returned ", solo ? "a communicator" : "nullptr");
  });
}

TEST_P(NcclCommTest, RejectsCpuTensors) {
  if (world() == 1) GTEST_SKIP() << "world size 1: the base class runs no backend op";
  run([](Rank& r) {
    at::Tensor cpu = at::ones({4}, r.dtype);
    try {
      r.comm.allReduce(cpu);
    } catch (const HarnessError& e) {
      const std::string msg = e.what();
      if (msg.find("nccl") == std::string::npos || msg.find("CUDA") == std::string::npos)
        fail("rank ", r.rank, ": error for a CPU tensor does not name backend and device: ", msg);
      return;
    }
    fail("rank ", r.rank, ": allReduce accepted a CPU tensor");
  });
}

INSTANTIATE_TEST_SUITE_P(Worlds, NcclCommTest, ::testing::Values(1, 2, 4),
                         [](const ::testing::TestParamInfo<int>& info) { return moe::str("W", info.param); });
}  // namespace moe::comm
