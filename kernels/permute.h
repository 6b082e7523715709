#pragma once
// Token permutation by expert (the "dispatch" layout of a dropless MoE).
//
// A routing assigns every token t to k experts topkIdx[t, j]; the k*T
// (token, slot) pairs are called slots, numbered s = t*k + j. Permuting puts
// the slots in expert-major order (then by slot number), so the rows of expert
// e are the contiguous block [offsets[e], offsets[e+1]). The order is a pure
// function of topkIdx (no sort stability is relied upon).
//
// permuteTokens and unpermuteCombine are differentiable with respect to x,
// the expert outputs and the routing weights.
//
// Device: every tensor of the plan lives on topkIdx's device and the
// permutation runs there with libtorch's ops (sort, scatter, bincount,
// index_select: CUDA ops on the CUDA lane, no kernel of ours);
// numTokensPerExpertHost is the one explicit device-to-host copy.
#include <torch/torch.h>

#include <vector>

namespace moe::kernels {

struct PermutePlan {
  int64_t numTokens = 0;
  int64_t topK = 0;
  torch::Tensor tokenOfRow;          // [T*k] int64: source token of each permuted row
  torch::Tensor rowOfSlot;           // [T*k] int64: permuted row of slot t*k+j
  torch::Tensor numTokensPerExpert;  // [E] int64
  torch::Tensor offsets;             // [E + 1] int64, offsets[0] = 0
  std::vector<int64_t> numTokensPerExpertHost;  // the same counts, on the host
};

// topkIdx: [T, k] int64 in [0, numExperts)
PermutePlan makePermutePlan(const torch::Tensor& topkIdx, int64_t numExperts);

// x: [T, H] -> [T*k, H], row r is x[tokenOfRow[r]]
torch::Tensor permuteTokens(const torch::Tensor& x, const PermutePlan& plan);

// Inverse of permuteTokens without combining: yPerm [T*k, H] -> [T, k, H]
torch::Tensor unpermuteTokens(const torch::Tensor& yPerm, const PermutePlan& plan);

// out[t] = sum_j topkWeights[t, j] * yPerm[rowOfSlot[t*k+j]], computed in the
// dtype of yPerm (weights are cast to it, as Hugging Face does) and summed
// over j in slot order.
// yPerm: [T*k, H], topkWeights: [T, k] -> [T, H]
torch::Tensor unpermuteCombine(const torch::Tensor& yPerm, const PermutePlan& plan,
                               const torch::Tensor& topkWeights);

}  // namespace moe::kernels
