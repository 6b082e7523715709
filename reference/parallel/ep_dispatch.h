#pragma once
// Expert-parallel MoE experts with real token dispatch (dropless).
//
// Each rank of the ep group holds L = E / ep consecutive experts
// [epRank * L, (epRank + 1) * L) and routes its OWN tokens. Steps:
//  1. permute the rank's (token, slot) rows expert-major (kernels::permute);
//     experts of rank j form one contiguous block, so blocks = destinations;
//  2. exchange split sizes first: all_to_all of the counts per
//     (destination rank, local expert) ([ep, L] int64);
//  3. all_to_all_single dispatch of the token rows;
//  4. regroup the received rows (source-major) local-expert-major and run the
//     local experts (grouped: groupedExpertsForward; loop: loopExpertsForward);
//  5. reverse all_to_all_single, then the weighted combine on the token's rank
//     (ref::combineExpertOutputs, rounding as the family does), so the routing
//     weights and the router-score gradient never leave the token's rank.
// Every step is differentiable (allToAllRows is a custom autograd function),
// so gradients reach x, the routing weights and the local expert weights.
// A rank whose experts get no tokens, or that sends none, takes part with
// zero-row splits.
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "harness/comm/communicator.h"
#include "reference/model/moe_block.h"

namespace moe::parallel {

struct EpDispatchOptions {
  int64_t numExperts = 0;                          // E (global)
  std::string expertsImplementation = "grouped";   // "grouped" | "loop"
  // MoE tensor parallelism (moe_experts_allreduce): the local experts hold a
  // tp slice of the intermediate dim, so their outputs are Partial(sum) over
  // this group; they are all-reduced right after the experts (identity
  // backward), before the return all_to_all. nullptr: no reduction.
  comm::Communicator* reduceExpertOutputs = nullptr;
  // Grouped experts under MoE TP in a narrow dtype (ref/model/partial_sums.h):
  // x arrives in fp32 (its rows are dispatched in fp32) and the experts'
  // partial outputs are reduced in fp32, then rounded to the experts' dtype.
  ref::PartialSums partialSums;
  // The model family's combine (ModelFamily::fp32Combine, Mixtral): the
  // returned rows are weighted and summed in fp32 and rounded once
  // (ref::combineExpertOutputs); otherwise the weights are cast to the rows'
  // dtype first (Qwen3-MoE).
  bool fp32Combine = false;
  // A family whose experts are not ref::LocalExperts' SwiGLU (gpt_oss): when
  // set, it computes the unweighted outputs of the received rows instead of
  // expertsImplementation's path.
  // xLocal: [N, H] local-expert-major, rows: L counts -> [N, H]
  std::function<torch::Tensor(const torch::Tensor& xLocal, const std::vector<int64_t>& rows)> localExperts;
};

struct EpDispatchResult {
  torch::Tensor out;                     // [T, H]: sum_j w[t, j] * expert_{idx[t, j]}(x[t])
  std::vector<int64_t> numTokensPerRank; // rows sent to each ep rank
  std::vector<int64_t> numTokensReceivedPerLocalExpert;  // rows computed per local expert
};

// x: [T, H] compute dtype, topkIdx: [T, k] int64 global expert ids,
// topkWeights: [T, k] (fp32 routing weights), experts: this rank's L experts
// (experts.firstExpert == epRank * L). Collective over `ep`.
EpDispatchResult epExpertsForward(const torch::Tensor& x, const torch::Tensor& topkIdx,
                                  const torch::Tensor& topkWeights,
                                  const ref::LocalExperts& experts, comm::Communicator& ep,
                                  const EpDispatchOptions& options);

}  // namespace moe::parallel
