#include "reference/parallel/ep_dispatch.h"

#include "common/error.h"
#include "kernels/permute.h"
#include "reference/mutants/mutation_points.h"
#include "reference/parallel/comm_ops.h"

namespace moe::parallel {

EpDispatchResult epExpertsForward(const torch::Tensor& x, const torch::Tensor& topkIdx,
                                  const torch::Tensor& topkWeights,
                                  const ref::LocalExperts& experts, comm::Communicator& ep,
                                  const EpDispatchOptions& options) {
  const int64_t numRanks = ep.size(), numExperts = options.numExperts;
  const int64_t numLocal = experts.gateUp.size(0);
  if (numLocal * numRanks != numExperts)
    fail("ep dispatch: rank ", ep.rank(), " holds ", numLocal, " experts, ep = ", numRanks,
         ", but the model has ", numExperts);
  MOE_ASSERT_EQ(experts.firstExpert, ep.rank() * numLocal, "local experts must be the rank's block");
  auto plan = kernels::makePermutePlan(topkIdx, numExperts);
  auto xPerm = kernels::permuteTokens(x, plan);  // [T*k, H], expert-major

  // 2. split sizes first: counts[j][l] = rows for expert l of rank j.
  auto sendCounts = plan.numTokensPerExpert.to(torch::kLong).contiguous().view({numRanks, numLocal});
  if (auto f = mutants::points().dispatchCounts) f(sendCounts);
  auto recvCounts = torch::empty_like(sendCounts);
  std::vector<int64_t> ones(numRanks, 1);
  ep.allToAllSingle(recvCounts, sendCounts, ones, ones);
  // The split sizes steer the host's loops: read them on the host (a
  // no-op on the CPU lane, one small copy each on CUDA).
  const auto sendHost = sendCounts.cpu(), recvHost = recvCounts.cpu();
  auto sendAcc = sendHost.accessor<int64_t, 2>();
  auto recvAcc = recvHost.accessor<int64_t, 2>();
  std::vector<int64_t> inSplits(numRanks, 0), outSplits(numRanks, 0);
  for (int64_t j = 0; j < numRanks; ++j)
    for (int64_t l = 0; l < numLocal; ++l) {
      inSplits[j] += sendAcc[j][l];
      outSplits[j] += recvAcc[j][l];
    }

  // 3. dispatch. The splits cover every permuted row unless a mutation
  // point lowered the counts; then only the first rows are sent.
  int64_t sent = 0;
  for (auto s : inSplits) sent += s;
  const int64_t numRows = xPerm.size(0);
  MOE_ASSERT(sent <= numRows, "dispatch splits ", sent, " exceed the ", numRows, " routed rows");
  auto xRecv = allToAllRows(sent == numRows ? xPerm : xPerm.narrow(0, 0, sent), ep, outSplits,
                            inSplits);  // [N, H], source-major

  // 4. regroup local-expert-major: for each l, the rows of every source in rank order.
  std::vector<int64_t> srcStart(numRanks, 0);
  for (int64_t i = 1; i < numRanks; ++i) srcStart[i] = srcStart[i - 1] + outSplits[i - 1];
  std::vector<int64_t> order, perExpert(numLocal, 0), expertOfRow;
  for (int64_t l = 0; l < numLocal; ++l)
    for (int64_t i = 0; i < numRanks; ++i) {
      int64_t start = srcStart[i];
      for (int64_t m = 0; m < l; ++m) start += recvAcc[i][m];
      for (int64_t r = 0; r < recvAcc[i][l]; ++r) {
        order.push_back(start + r);
        expertOfRow.push_back(experts.firstExpert + l);
      }
      perExpert[l] += recvAcc[i][l];
    }
  const int64_t n = static_cast<int64_t>(order.size());
  // Routing and dispatch index tensors live on the tokens' device.
  auto longOpts = torch::TensorOptions().dtype(torch::kLong).device(x.device());
  auto orderT = torch::tensor(order, longOpts);
  auto xLocal = xRecv.index_select(0, orderT);  // [N, H] local-expert-major
  torch::Tensor y;
  if (options.localExperts) {
    // As for the loop below: keep the graph connected to xRecv (exact +0).
    y = options.localExperts(xLocal, perExpert) + xLocal.sum() * 0;
  } else if (options.expertsImplementation == "loop") {
    auto idx = torch::tensor(expertOfRow, longOpts).view({n, 1});
    auto w = torch::ones({n, 1}, topkWeights.options());
    // The loop skips experts without rows, which can leave y unconnected to
    // xRecv; every rank must still run the backward all_to_alls, so keep
    // the graph connected with an exact +0.
    y = ref::loopExpertsForward(xLocal, idx, w, experts) + xLocal.sum() * 0;
  } else if (options.expertsImplementation == "grouped") {
    y = ref::groupedExpertsForward(xLocal, perExpert, experts, options.partialSums);
  } else {
    fail("ep dispatch: unknown experts implementation \"", options.expertsImplementation, "\"");
  }
  if (options.reduceExpertOutputs) {
    if (auto f = mutants::points().reduceExpertOutputs) y = f(y, *options.reduceExpertOutputs);
    else y = reduceFromGroup(y, *options.reduceExpertOutputs);
    // fp32 partial sums are rounded once, after the reduction
    if (options.partialSums.wideOutput) y = y.to(options.partialSums.computeDtype);
  }  // else a wide partial output stays fp32 for the caller's reduction
  // Back to source-major: row order[j] of yRecv is y[j].
  auto inverse = torch::empty({n}, longOpts);
  if (n > 0) inverse.index_put_({orderT}, torch::arange(n, longOpts));
  auto yRecv = y.index_select(0, inverse);

  // 5. return and combine on the token's rank.
  auto yPerm = allToAllRows(yRecv, ep, inSplits, outSplits);  // [sent, H]
  if (sent < numRows)  // rows never sent contribute zero
    yPerm = torch::cat({yPerm, torch::zeros({numRows - sent, yPerm.size(1)}, yPerm.options())});
  EpDispatchResult r;
  r.out = ref::combineExpertOutputs(yPerm, plan, topkWeights, options.fp32Combine);
  r.numTokensPerRank = inSplits;
  r.numTokensReceivedPerLocalExpert = perExpert;
  return r;
}

}  // namespace moe::parallel
