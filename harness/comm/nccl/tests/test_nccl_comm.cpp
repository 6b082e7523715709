// NCCL backend: every op against values computed here in closed form (never
// by the code under test), for world sizes 1, 2 and 4 in fp32 and bf16.
//
// Every value is an integer below 256 that encodes where it came from
// (sending rank, row, column), so each is exact in bf16 and misrouted data
// names its origin. Group sizes are powers of two, so avg is exact too.
//
// These tests need one GPU per rank. Without them (no driver, too few
// devices) each test is SKIPPED with ncclUsableImpl's reason; it never passes.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

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

at::Tensor emptyOnDevice(const Rank& r, at::IntArrayRef shape) {
  return at::empty(shape, at::TensorOptions().dtype(r.dtype).device(r.device));
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

// torch.chunk row counts: ceil(total / world) each, the tail short or empty.
std::vector<int64_t> chunkRows(int64_t total, int world) {
  const int64_t chunk = (total + world - 1) / world;
  std::vector<int64_t> rows(world);
  for (int r = 0; r < world; ++r)
    rows[r] = std::max<int64_t>(0, std::min<int64_t>(chunk, total - r * chunk));
  return rows;
}

int64_t sum(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), int64_t{0}); }

class NcclCommTest : public ::testing::TestWithParam<std::tuple<int, at::ScalarType>> {
 protected:
  // Every test first asks whether the machine can run it at all.
  void SetUp() override {
    std::string reason;
    if (!ncclUsableImpl(world(), &reason)) GTEST_SKIP() << reason;
  }
  int world() const { return std::get<0>(GetParam()); }
  at::ScalarType dtype() const { return std::get<1>(GetParam()); }
  void run(const RankBody& body) { runRanks(world(), dtype(), body); }
};

TEST_P(NcclCommTest, AllReduce) {
  run([](Rank& r) {
    const int w = r.world;
    // Rank q contributes (q + 1) * (1 + i % 5).
    auto base = [](int64_t i) { return 1.0 + i % 5; };
    const double rankSum = w * (w + 1) / 2.0;
    const std::vector<std::pair<ReduceOp, std::function<double(int64_t)>>> cases = {
        {ReduceOp::kSum, [&](int64_t i) { return rankSum * base(i); }},
        {ReduceOp::kAvg, [&](int64_t i) { return rankSum * base(i) / w; }},
        {ReduceOp::kMax, [&](int64_t i) { return w * base(i); }},
        {ReduceOp::kMin, [&](int64_t i) { return base(i); }},
    };
    for (const auto& [op, expected] : cases) {
      at::Tensor t = onDevice(r, make({3, 5}, [&](int64_t i) { return (r.rank + 1) * base(i); }));
      r.comm.allReduce(t, op);
      expectEqual(r, str("allReduce(", reduceOpName(op), ")"), t, make({3, 5}, expected));
    }
  });
}

TEST_P(NcclCommTest, Broadcast) {
  run([](Rank& r) {
    const int root = r.world - 1;
    auto origin = [](int q, int64_t i) { return q * 16.0 + i; };
    at::Tensor t = onDevice(r, make({2, 4}, [&](int64_t i) { return origin(r.rank, i); }));
    r.comm.broadcast(t, root);
    expectEqual(r, str("broadcast(root ", root, ")"), t,
                make({2, 4}, [&](int64_t i) { return origin(root, i); }));
  });
}

TEST_P(NcclCommTest, Barrier) {
  run([](Rank& r) {
    for (int i = 0; i < 3; ++i) r.comm.barrier();
  });
}

TEST_P(NcclCommTest, SendRecvRing) {
  if (world() == 1) GTEST_SKIP() << "world size 1: a rank has no peer to send to";
  run([](Rank& r) {
    const int next = (r.rank + 1) % r.world;
    const int prev = (r.rank + r.world - 1) % r.world;
    auto origin = [](int q, int64_t i) { return q * 16.0 + i; };
    at::Tensor out = onDevice(r, make({3, 4}, [&](int64_t i) { return origin(r.rank, i); }));
    at::Tensor in = emptyOnDevice(r, {3, 4});
    // Even ranks send first, odd ranks receive first: blocking p2p cannot
    // deadlock on an even ring.
    if (r.rank % 2 == 0) {
      r.comm.send(out, next);
      r.comm.recv(in, prev);
    } else {
      r.comm.recv(in, prev);
      r.comm.send(out, next);
    }
    expectEqual(r, str("recv from rank ", prev), in,
                make({3, 4}, [&](int64_t i) { return origin(prev, i); }));
  });
}

// Element (row j of rank q's block, column k) = q * 16 + j * 4 + k.
double gatherValue(int q, int64_t j, int64_t k) { return q * 16.0 + j * 4 + k; }

void checkAllGather(Rank& r, const std::vector<int64_t>& rows, bool passRows) {
  constexpr int64_t kCols = 3;
  at::Tensor in = onDevice(r, make({rows[r.rank], kCols}, [&](int64_t i) {
                             return gatherValue(r.rank, i / kCols, i % kCols);
                           }));
  at::Tensor out = emptyOnDevice(r, {sum(rows), kCols});
  r.comm.allGather(out, in, passRows ? rows : std::vector<int64_t>{});
  std::vector<double> want;
  for (int q = 0; q < r.world; ++q)
    for (int64_t j = 0; j < rows[q]; ++j)
      for (int64_t k = 0; k < kCols; ++k) want.push_back(gatherValue(q, j, k));
  expectEqual(r, "allGather out", out,
              make({sum(rows), kCols}, [&](int64_t i) { return want[i]; }));
}

TEST_P(NcclCommTest, AllGatherEqual) {
  run([](Rank& r) { checkAllGather(r, std::vector<int64_t>(r.world, 2), /*passRows=*/false); });
}

TEST_P(NcclCommTest, AllGatherUneven) {
  // world + 1 rows split like torch.chunk: 4 ranks get [2, 2, 1, 0].
  run([](Rank& r) { checkAllGather(r, chunkRows(r.world + 1, r.world), /*passRows=*/true); });
}

// Rank q's input element (row j, column k) = (q + 1) * (1 + (3j + k) % 7).
void checkReduceScatter(Rank& r, const std::vector<int64_t>& rows, bool passRows) {
  constexpr int64_t kCols = 3;
  const int w = r.world;
  const double rankSum = w * (w + 1) / 2.0;
  auto base = [](int64_t flat) { return 1.0 + flat % 7; };
  int64_t firstRow = 0;
  for (int q = 0; q < r.rank; ++q) firstRow += rows[q];
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
    at::Tensor in = onDevice(r, make({sum(rows), kCols},
                                     [&](int64_t i) { return (r.rank + 1) * base(i); }));
    at::Tensor out = emptyOnDevice(r, {rows[r.rank], kCols});
    r.comm.reduceScatter(out, in, op, passRows ? rows : std::vector<int64_t>{});
    const double scale = op == ReduceOp::kSum ? rankSum : rankSum / w;
    expectEqual(r, str("reduceScatter(", reduceOpName(op), ") out"), out,
                make({rows[r.rank], kCols},
                     [&](int64_t i) { return scale * base(firstRow * kCols + i); }));
  }
}

TEST_P(NcclCommTest, ReduceScatterEqual) {
  run([](Rank& r) { checkReduceScatter(r, std::vector<int64_t>(r.world, 2), /*passRows=*/false); });
}

TEST_P(NcclCommTest, ReduceScatterUneven) {
  run([](Rank& r) { checkReduceScatter(r, chunkRows(r.world + 1, r.world), /*passRows=*/true); });
}

TEST_P(NcclCommTest, AllToAllUneven) {
  run([](Rank& r) {
    constexpr int64_t kCols = 2;
    const int w = r.world;
    // Rows rank i sends to rank j; zeros included (e.g. 0 -> 0).
    auto rowsFromTo = [](int i, int j) -> int64_t { return (i + 2 * j) % 3; };
    // Row m sent from i to j, column k.
    auto value = [](int i, int j, int64_t m, int64_t k) { return i * 32.0 + j * 8 + m * 2 + k; };
    std::vector<int64_t> inSplits(w), outSplits(w);
    std::vector<double> send, want;
    for (int j = 0; j < w; ++j) {
      inSplits[j] = rowsFromTo(r.rank, j);
      outSplits[j] = rowsFromTo(j, r.rank);
      for (int64_t m = 0; m < inSplits[j]; ++m)
        for (int64_t k = 0; k < kCols; ++k) send.push_back(value(r.rank, j, m, k));
      for (int64_t m = 0; m < outSplits[j]; ++m)
        for (int64_t k = 0; k < kCols; ++k) want.push_back(value(j, r.rank, m, k));
    }
    at::Tensor in = onDevice(r, make({sum(inSplits), kCols}, [&](int64_t i) { return send[i]; }));
    at::Tensor out = emptyOnDevice(r, {sum(outSplits), kCols});
    r.comm.allToAllSingle(out, in, outSplits, inSplits);
    expectEqual(r, "allToAllSingle out", out,
                make({sum(outSplits), kCols}, [&](int64_t i) { return want[i]; }));
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

std::string paramName(const ::testing::TestParamInfo<NcclCommTest::ParamType>& info) {
  return str("W", std::get<0>(info.param), "_",
             std::get<1>(info.param) == at::kBFloat16 ? "bf16" : "fp32");
}

INSTANTIATE_TEST_SUITE_P(Worlds, NcclCommTest,
                         ::testing::Combine(::testing::Values(1, 2, 4),
                                            ::testing::Values(at::kFloat, at::kBFloat16)),
                         paramName);

// Runs on every machine: the skip signal itself. No machine has 2^20 GPUs, so
// this is false everywhere with a reason naming what was needed.
TEST(NcclUsable, FalseWithReasonWhenTooFewGpus) {
  std::string reason;
  EXPECT_FALSE(ncclUsableImpl(1 << 20, &reason));
  EXPECT_EQ(reason.rfind("nccl backend needs 1048576 GPUs; ", 0), 0u) << reason;
  std::string again;
  ncclUsableImpl(1 << 20, &again);
  EXPECT_EQ(reason, again) << "the probe result is cached";
}

}  // namespace
}  // namespace moe::comm
