#pragma once
// Top-k routing for MoE layers (Hugging Face Qwen3-MoE semantics).
//
// Contract:
//  - probabilities are softmax(router logits) computed in fp32 (fp64 when the
//    logits are fp64, so float64 finite-difference tests stay exact);
//  - experts are chosen by descending probability; exact ties go to the lower
//    expert index (a stated rule, not torch::topk's unspecified order);
//  - when normTopkProb, the k selected weights are divided by their sum;
//  - gradients flow from topkWeights and probs back to the logits; topkIdx is
//    an integer selection and carries none;
//  - every result lives on the logits' device (libtorch ops only: CUDA ops
//    on the CUDA lane).
#include <torch/torch.h>

namespace moe::kernels {

struct TopkRoutingOptions {
  int64_t topK = 1;
  bool normTopkProb = false;
};

struct TopkRouting {
  torch::Tensor probs;        // [num_tokens, num_experts] fp32/fp64 softmax
  torch::Tensor topkIdx;      // [num_tokens, k] int64, best first
  torch::Tensor topkWeights;  // [num_tokens, k] same dtype as probs
};

// Indices of the k largest entries per row, best first, ties to the lower
// column index. No autograd.
// scores: [num_rows, n] -> [num_rows, k] int64
torch::Tensor stableTopkIndices(const torch::Tensor& scores, int64_t k);

// logits: [num_tokens, num_experts] (any floating dtype)
TopkRouting topkRoute(const torch::Tensor& logits, const TopkRoutingOptions& options);

// The dtype routing statistics are computed in: fp32, or fp64 for fp64 input.
torch::ScalarType routingDtype(torch::ScalarType inputDtype);

}  // namespace moe::kernels
