#pragma once
// The MoE block of Qwen3-MoE, split at the seams expert parallelism needs:
//   routeTokens      router linear + fp32 softmax + stable top-k (+ renorm)
//   dispatch         kernels::makePermutePlan / permuteTokens (all_to_all later)
//   experts          groupedExpertsForward on the rows of the local experts,
//                    or loopExpertsForward (per expert, the obvious reference)
//   combine          kernels::unpermuteCombine with the routing weights
// The experts functions take only the local expert weights and the global
// index of the first local expert, so a rank holding experts [f, f+L) runs
// the same code as the single device (f = 0, L = E).
#include <torch/torch.h>

#include <vector>

#include "kernels/permute.h"
#include "kernels/routing.h"
#include "reference/model/config.h"
#include "reference/model/partial_sums.h"

namespace moe::ref {

struct LocalExperts {
  torch::Tensor gateUp;  // [L, 2I, H], gate rows first (compute dtype)
  torch::Tensor down;    // [L, H, I] (compute dtype)
  int64_t firstExpert = 0;  // global index of local expert 0
};

struct RouterOutput {
  torch::Tensor logits;  // [T, E] compute dtype (input of the aux loss)
  kernels::TopkRouting routing;
};

// x: [T, H], routerWeight: [E, H]; both in the compute dtype.
// correctionBias [E]: the family's e_score_correction_bias when
// ModelFamily::biasCorrectedRouter (deepseek_v3.h biasCorrectedRoute: then
// routerWeight is the fp32 master, unrounded), else undefined.
RouterOutput routeTokens(const torch::Tensor& x, const torch::Tensor& routerWeight,
                         const ModelConfig& config, const torch::Tensor& correctionBias = {});

// SwiGLU MLP: down(silu(x gate^T) * (x up^T)).
// x: [N, H], gate/up: [I, H], down: [H, I] -> [N, H]
// (partialSums: see partial_sums.h; x fp32 when wideInput, fp32 result when
// wideOutput)
torch::Tensor swiglu(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& up,
                     const torch::Tensor& down, const PartialSums& partialSums = {});

// Unweighted expert outputs for rows already grouped by local expert.
// xPerm: [N, H], numTokensPerLocalExpert: L counts summing to N -> [N, H]
// (partialSums as for swiglu: MoE tensor parallelism splits I over tp)
torch::Tensor groupedExpertsForward(const torch::Tensor& xPerm,
                                    const std::vector<int64_t>& numTokensPerLocalExpert,
                                    const LocalExperts& experts, const PartialSums& partialSums = {});

// Reference loop: for each local expert, gather its tokens, run the SwiGLU,
// scale by the routing weight and accumulate. Tokens routed to non-local
// experts contribute nothing (a rank's partial sum).
// fp32Combine (ModelFamily::fp32Combine): the weights keep their own dtype
// and the weighted outputs are accumulated in the wider of x's and theirs;
// the sum is returned UNROUNDED in that dtype, so a caller that still sums
// partial outputs (MoE tensor parallelism) rounds once, after that sum.
// Otherwise the weights are cast to x's dtype and the result is in it.
// x: [T, H], topkIdx: [T, k] (global expert ids), topkWeights: [T, k] -> [T, H]
torch::Tensor loopExpertsForward(const torch::Tensor& x, const torch::Tensor& topkIdx,
                                 const torch::Tensor& topkWeights, const LocalExperts& experts,
                                 bool fp32Combine = false);

// The weighted combine of the expert outputs of every (token, slot) row, as
// the family rounds it. fp32Combine false (Qwen3-MoE): the weights are cast
// to yPerm's dtype (kernels::unpermuteCombine). fp32Combine true (Mixtral,
// ModelFamily::fp32Combine): the slots are promoted to the wider of the two
// dtypes, weighted and summed left to right there (unpermuteCombine's
// order), and the sum is rounded to yPerm's dtype once.
// yPerm: [T*k, H] (plan order), topkWeights: [T, k] -> [T, H] in yPerm's dtype
torch::Tensor combineExpertOutputs(const torch::Tensor& yPerm, const kernels::PermutePlan& plan,
                                   const torch::Tensor& topkWeights, bool fp32Combine);

struct MoeBlockWeights {
  torch::Tensor router;  // [E, H]
  LocalExperts experts;  // all E experts on a single device
  // Optional shared expert (undefined tensors when absent).
  torch::Tensor sharedGate, sharedUp, sharedDown;  // [S, H], [S, H], [H, S]
  torch::Tensor sharedExpertGate;                  // [1, H]; undefined with shared below: ungated
  torch::Tensor correctionBias;                    // [E] deepseek_v3, else undefined
};

struct MoeBlockOutput {
  torch::Tensor out;           // [T, H]
  torch::Tensor routerLogits;  // [T, E]
  torch::Tensor topkIdx;       // [T, k] the routing (for the expert loads)
};

// Single-device MoE block; config.expertsImplementation picks loop or grouped.
// x: [T, H] in the compute dtype
MoeBlockOutput moeBlockForward(const torch::Tensor& x, const MoeBlockWeights& weights,
                               const ModelConfig& config);

}  // namespace moe::ref
