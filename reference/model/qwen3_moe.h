#pragma once
// Forward pass of the reference Qwen3-MoE causal LM (Hugging Face semantics)
// over a ParamMap, plus its loss.
//
// Precision: every parameter is cast to ForwardOptions::computeDtype at its
// use, so with fp32 masters and computeDtype = bf16 the forward/backward run in
// bf16 while gradients land on the fp32 masters in fp32. Norm statistics,
// attention softmax, router softmax and the loss run in fp32 (fp64 when the
// compute dtype is fp64, for finite-difference tests).
#include <torch/torch.h>

#include <vector>

#include "reference/model/config.h"
#include "reference/model/params.h"
#include "reference/model/partial_sums.h"

namespace moe::ref {

struct ForwardOptions {
  torch::ScalarType computeDtype = torch::kFloat;
};

struct ModelOutput {
  torch::Tensor logits;                     // [B, S, V] compute dtype
  std::vector<torch::Tensor> routerLogits;  // per MoE layer: [B*S, E]
  // Per MoE layer [E] fp32: the (token, slot) selections of each expert
  // (deepseek_v3.h expertLoads; the input of the correction-bias rule).
  std::vector<torch::Tensor> expertLoads;
};

// RMSNorm: statistics in fp32 (or fp64), normalised x cast back to x's dtype,
// then scaled by weight rounded to x's dtype (the HF value). A weight wider
// than x (an fp32 master under bf16 compute) gets an fp32 gradient: the
// rounding is straight-through, so per-rank partial gradients are not
// rounded to bf16 before they are summed. x: [..., n], weight: [n]
torch::Tensor rmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// Rotate-half RoPE tables for positions 0..seqLen-1, computed in fp32 and
// cast to dtype. Returns {cos, sin}, each [S, headDim].
std::pair<torch::Tensor, torch::Tensor> ropeTables(int64_t seqLen, int64_t headDim, double theta,
                                                   torch::ScalarType dtype);

// Causal GQA self-attention of one layer (q_norm/k_norm per head, RoPE,
// scale 1/sqrt(head_dim)). Head counts are read from the weight shapes.
// x: [B, S, H] -> [B, S, H]. partialSums (tensor parallelism, see
// partial_sums.h): x may be fp32 (wideInput) and the result the fp32
// partial output of o_proj (wideOutput).
torch::Tensor attentionForward(const torch::Tensor& x, const ParamMap& params,
                               const std::string& prefix, const ModelConfig& config,
                               torch::ScalarType dtype, const PartialSums& partialSums = {});

// inputIds: [B, S] int64
ModelOutput forwardModel(const ModelConfig& config, const ParamMap& params,
                         const torch::Tensor& inputIds, const ForwardOptions& options = {});

// --- loss -----------------------------------------------------------------

struct LossParts {
  torch::Tensor loss;  // ce + router_aux_loss_coef * aux (scalar, fp32/fp64)
  torch::Tensor ce;    // scalar
  torch::Tensor aux;   // scalar (0 when the model has no MoE layer or its family no aux loss)
};

// Next-token cross-entropy: position t predicts token t+1, mean over all
// B*(S-1) positions, computed in fp32 (fp64 for fp64 logits).
// logits: [B, S, V], inputIds: [B, S]
torch::Tensor causalLmCrossEntropy(const torch::Tensor& logits, const torch::Tensor& inputIds);

// The sums behind Hugging Face's load_balancing_loss_func, kept separate so a
// data-parallel run can all-reduce them before forming aux.
struct RouterAuxStats {
  torch::Tensor selectionCounts;  // [k, E] fp32: sum over tokens of one-hot top-k (no grad)
  torch::Tensor probSums;         // [E]: sum over tokens of softmax probabilities (grad)
  int64_t numTokens = 0;          // tokens summed (over all MoE layers)
};

// routerLogits: per MoE layer [T, E]; concatenated over layers like HF.
RouterAuxStats routerAuxStats(const std::vector<torch::Tensor>& routerLogits, int64_t topK);

// aux = E * sum_{j,e} (counts[j,e] / N) * (probSums[e] / N)
torch::Tensor loadBalancingLoss(const RouterAuxStats& stats);

// inputIds: [B, S]
LossParts computeLoss(const ModelConfig& config, const ModelOutput& output,
                      const torch::Tensor& inputIds);

}  // namespace moe::ref
