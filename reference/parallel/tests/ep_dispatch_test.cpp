// EP dispatch on real gloo ranks against the single-device experts.
//
// Every rank builds the whole (tiny) problem from a seed: all ranks' tokens
// (value = f(rank, token, feature)), router logits, expert weights and an
// upstream gradient. The expected values come from the single-device path
// on the concatenated tokens with all experts and the LOOP implementation
// (an independent code path: no permute, no all_to_all). The rank then runs
// epExpertsForward on its own tokens and local experts and compares the
// output, d x, d router logits and d local experts.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <iostream>

#include "common/error.h"
#include "harness/mesh/device_mesh.h"
#include "harness/tests/rank_test_util.h"
#include "kernels/routing.h"
#include "reference/model/moe_block.h"
#include "reference/parallel/ep_dispatch.h"

namespace moe::parallel {
namespace {

enum class Routing { kRandom, kNoTokensForLastRank, kExactTies };

double maxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.numel() == 0) return 0;
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

int runCase(mesh::DeviceMesh& mesh, int worldSize, Routing routing, const std::string& impl,
            int64_t seed) {
  const int rank = mesh.world()->rank();
  const int64_t tokensPerRank = 5, hidden = 8, inter = 6, topK = 2, numExperts = 2 * worldSize;
  const int64_t numLocal = numExperts / worldSize;
  torch::manual_seed(seed);
  const int64_t total = tokensPerRank * worldSize;
  // x[t, h] = f(rank of t, token, feature): misrouted rows are visible.
  auto tok = torch::arange(total, torch::kDouble).unsqueeze(1);
  auto feat = torch::arange(hidden, torch::kDouble).unsqueeze(0);
  auto xAll = (torch::sin(tok * 0.37 + feat * 0.11) + 0.01 * tok).to(torch::kFloat);
  auto logitsAll = torch::randn({total, numExperts});
  if (routing == Routing::kNoTokensForLastRank)
    logitsAll.narrow(1, (worldSize - 1) * numLocal, numLocal).fill_(-30.0);
  if (routing == Routing::kExactTies) logitsAll.zero_();
  auto gateUp = torch::randn({numExperts, 2 * inter, hidden}) * 0.3;
  auto down = torch::randn({numExperts, hidden, inter}) * 0.3;
  auto upstream = torch::randn({total, hidden});

  // Single-device expectation (loop implementation).
  auto xr = xAll.clone().requires_grad_(true);
  auto lr = logitsAll.clone().requires_grad_(true);
  auto gr = gateUp.clone().requires_grad_(true);
  auto dr = down.clone().requires_grad_(true);
  auto rr = kernels::topkRoute(lr, {topK, /*normTopkProb=*/true});
  auto outRef = ref::loopExpertsForward(xr, rr.topkIdx, rr.topkWeights, {gr, dr, 0});
  (outRef * upstream).sum().backward();

  // Distributed: own tokens, own experts.
  auto x = xAll.narrow(0, rank * tokensPerRank, tokensPerRank).clone().requires_grad_(true);
  auto lg = logitsAll.narrow(0, rank * tokensPerRank, tokensPerRank).clone().requires_grad_(true);
  auto g = gateUp.narrow(0, rank * numLocal, numLocal).clone().requires_grad_(true);
  auto d = down.narrow(0, rank * numLocal, numLocal).clone().requires_grad_(true);
  auto r = kernels::topkRoute(lg, {topK, true});
  auto res = epExpertsForward(x, r.topkIdx, r.topkWeights, {g, d, rank * numLocal}, *mesh.comm("ep"),
                              {numExperts, impl});
  (res.out * upstream.narrow(0, rank * tokensPerRank, tokensPerRank)).sum().backward();

  const double tol = 1e-5;
  auto mine = [&](const torch::Tensor& t) { return t.narrow(0, rank * tokensPerRank, tokensPerRank); };
  auto myExperts = [&](const torch::Tensor& t) { return t.narrow(0, rank * numLocal, numLocal); };
  const double dOut = maxDiff(res.out, mine(outRef));
  const double dX = maxDiff(x.grad(), mine(xr.grad()));
  const double dLogits = maxDiff(lg.grad(), mine(lr.grad()));
  const double dG = maxDiff(g.grad(), myExperts(gr.grad()));
  const double dD = maxDiff(d.grad(), myExperts(dr.grad()));
  std::cout << "rank " << rank << " world " << worldSize << " routing " << static_cast<int>(routing)
            << " " << impl << ": max|d| out " << dOut << " dx " << dX << " dlogits " << dLogits
            << " dgate_up " << dG << " ddown " << dD << " received "
            << torch::IntArrayRef(res.numTokensReceivedPerLocalExpert) << std::endl;
  RANK_CHECK(dOut < tol && dX < tol && dLogits < tol && dG < tol && dD < tol, "rank ", rank,
             ": EP dispatch differs from single device (out ", dOut, ", dx ", dX, ", dlogits ",
             dLogits, ", dgate_up ", dG, ", ddown ", dD, ")");
  int64_t received = 0;
  for (auto n : res.numTokensReceivedPerLocalExpert) received += n;
  if (routing == Routing::kNoTokensForLastRank || routing == Routing::kExactTies) {
    if (rank == worldSize - 1 && worldSize > 1)
      RANK_CHECK(received == 0, "rank ", rank, " should get no tokens, got ", received);
  }
  // Dispatch volume: tokens x top-k leave every rank.
  int64_t sent = 0;
  for (auto n : res.numTokensPerRank) sent += n;
  RANK_CHECK(sent == tokensPerRank * topK, "rank ", rank, " sent ", sent, " rows");
  return 0;
}

// The family's fp32 combine (Mixtral, EpDispatchOptions::fp32Combine) in
// bf16. Expected: the single-device loop with fp32Combine, rounded once
// (moe_block.h), an independent path (no permute, no all_to_all, index_add
// per expert). With the loop implementation on both sides every expert sees
// the same rows in the same order (ranks hold contiguous tokens), so its
// bf16 outputs are the same bits, and with k = 2 the fp32 sums of the two
// slots are too: the outputs must be identical. The bf16 combine (the
// weights rounded first) must differ from them on this data, or the test
// could not tell the two apart.
int runWideCombineCase(mesh::DeviceMesh& mesh, int worldSize, int64_t seed) {
  const int rank = mesh.world()->rank();
  const int64_t tokensPerRank = 6, hidden = 8, inter = 6, topK = 2, numExperts = 2 * worldSize;
  const int64_t numLocal = numExperts / worldSize, total = tokensPerRank * worldSize;
  torch::manual_seed(seed);
  auto tok = torch::arange(total, torch::kDouble).unsqueeze(1);
  auto feat = torch::arange(hidden, torch::kDouble).unsqueeze(0);
  auto xAll = (torch::sin(tok * 0.37 + feat * 0.11) + 0.01 * tok).to(torch::kBFloat16);
  auto logitsAll = torch::randn({total, numExperts});
  auto gateUp = (torch::randn({numExperts, 2 * inter, hidden}) * 0.3).to(torch::kBFloat16);
  auto down = (torch::randn({numExperts, hidden, inter}) * 0.3).to(torch::kBFloat16);

  auto all = kernels::topkRoute(logitsAll, {topK, /*normTopkProb=*/true});  // fp32 weights
  auto want = ref::loopExpertsForward(xAll, all.topkIdx, all.topkWeights, {gateUp, down, 0},
                                      /*fp32Combine=*/true)
                  .to(torch::kBFloat16);
  auto mine = [&](const torch::Tensor& t) { return t.narrow(0, rank * tokensPerRank, tokensPerRank); };
  auto x = mine(xAll).clone();
  auto r = kernels::topkRoute(mine(logitsAll).clone(), {topK, true});
  const ref::LocalExperts local{gateUp.narrow(0, rank * numLocal, numLocal),
                                down.narrow(0, rank * numLocal, numLocal), rank * numLocal};
  EpDispatchOptions narrowOpts;
  narrowOpts.numExperts = numExperts;
  narrowOpts.expertsImplementation = "loop";
  EpDispatchOptions wide = narrowOpts;
  wide.fp32Combine = true;
  auto got = epExpertsForward(x, r.topkIdx, r.topkWeights, local, *mesh.comm("ep"), wide).out;
  auto narrow = epExpertsForward(x, r.topkIdx, r.topkWeights, local, *mesh.comm("ep"), narrowOpts).out;
  const double dWide = maxDiff(got, mine(want)), dNarrow = maxDiff(narrow, mine(want));
  std::cout << "rank " << rank << " world " << worldSize << " bf16 fp32Combine: max|d| " << dWide
            << " (dtype " << got.scalar_type() << "); the bf16 combine differs by " << dNarrow << std::endl;
  RANK_CHECK(got.scalar_type() == torch::kBFloat16, "rank ", rank, ": combined output in ", got.scalar_type(),
             ", expected the experts' dtype BFloat16");
  RANK_CHECK(dWide == 0, "rank ", rank, ": EP fp32 combine differs from the single-device one by ", dWide);
  // Every rank judges the discrimination on the whole batch, so all agree.
  auto nd = torch::tensor({dNarrow});
  mesh.comm("ep")->allReduce(nd, comm::ReduceOp::kMax);
  RANK_CHECK(nd.item<double>() > 0, "the bf16 and fp32 combines agree on this data: the test cannot tell them apart");
  return 0;
}

int runAll(int worldSize) {
  auto world = ranktest::rankWorld();
  mesh::DeviceMesh mesh(world, {{"ep", worldSize}});
  for (auto routing : {Routing::kRandom, Routing::kNoTokensForLastRank, Routing::kExactTies})
    for (const char* impl : {"grouped", "loop"})
      if (int rc = runCase(mesh, worldSize, routing, impl, 100 + worldSize)) return rc;
  return runWideCombineCase(mesh, worldSize, 200 + worldSize);
}

TEST(EpDispatchGloo, TwoRanks) {
  auto r = ranktest::runRanks(2, [](const launch::RankContext&) { return runAll(2); });
  ASSERT_TRUE(r.result.ok) << r.all();
  std::cout << r.out;
}

TEST(EpDispatchGloo, ThreeRanks) {
  auto r = ranktest::runRanks(3, [](const launch::RankContext&) { return runAll(3); });
  ASSERT_TRUE(r.result.ok) << r.all();
}

TEST(EpDispatchGloo, FourRanks) {
  auto r = ranktest::runRanks(4, [](const launch::RankContext&) { return runAll(4); });
  ASSERT_TRUE(r.result.ok) << r.all();
}

}  // namespace
}  // namespace moe::parallel
