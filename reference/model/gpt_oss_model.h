#pragma once
// The GPT-OSS layers (Hugging Face GptOssForCausalLM, transformers 5.25)
// over a ParamMap: the family's parameter specs, its attention, router and
// experts, and its single-device forward. forwardModel() and
// parameterSpecs() hand a gpt_oss config here (ModelFamily::gptOssLayers).
//
// Semantics (the harness's precision rules of qwen3_moe.h apply: weights
// rounded to the compute dtype, matmuls accumulated in fp32; a linear's bias
// is added to the fp32 accumulator before the one rounding, as addmm does):
//  - RMSNorm: statistics in fp32, then weight * normed in fp32, rounded once
//    (GptOssRMSNorm multiplies before casting back; Qwen3 casts first).
//  - attention: q/k/v/o_proj with biases; RoPE (the halves convention, equal
//    to rotate-half); scores q k^T / sqrt(head_dim), causal, and on a
//    "sliding_attention" layer only keys s with t - s < sliding_window; one
//    learned sink logit per head joins each query's softmax as an extra
//    column and is dropped after it. Softmax in fp32 (Hugging Face: the
//    compute dtype; a deliberate difference, invisible in fp32).
//  - router mlp.router: logits = x W^T + b [T, E]; the k largest logits, and
//    a softmax over those k (equal to the fp32 full softmax renormalised over
//    its top-k, which kernels::topkRoute computes: ties to the lower index).
//    The aux loss reads these logits (bias included), as Hugging Face does.
//  - experts: gate_up = x gate_up_proj[e] + gate_up_proj_bias[e] [n, 2I];
//    gate = gate_up[:, 0::2], up = gate_up[:, 1::2] (interleaved);
//    gate = min(gate, limit), up = clamp(up, -limit, limit);
//    h = (up + 1) * gate * sigmoid(alpha * gate); y = h down_proj[e] +
//    down_proj_bias[e]; the routing weights (cast to the compute dtype)
//    scale y and the slots are summed.
#include <torch/torch.h>

#include <vector>

#include "reference/model/config.h"
#include "reference/model/moe_block.h"
#include "reference/model/params.h"
#include "reference/model/partial_sums.h"
#include "reference/model/qwen3_moe.h"

namespace moe::ref {

// Every parameter of a gpt_oss model, in Hugging Face's order: per layer
// self_attn.sinks [heads], self_attn.{q,k,v,o}_proj.{weight,bias},
// mlp.router.{weight [E, H], bias [E]}, mlp.experts.gate_up_proj [E, H, 2I],
// gate_up_proj_bias [E, 2I], down_proj [E, I, H], down_proj_bias [E, H],
// input_layernorm.weight, post_attention_layernorm.weight.
std::vector<ParamSpec> gptOssParameterSpecs(const ModelConfig& config);

// GptOssRMSNorm (see above). x: [..., n], weight: [n] (an fp32 master gets
// an fp32 gradient: its rounding to x's dtype is straight-through).
torch::Tensor gptOssRmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// y = x w^T + b, one rounding (partial_sums.h for ps; an undefined b adds
// nothing). x: [..., in], w: [out, in], b: [out] -> [..., out]
torch::Tensor projectBias(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                          const PartialSums& ps = {});

// The clamped SwiGLU of the interleaved gate/up columns.
// gateUp: [N, 2I] (column 2j gate j, 2j + 1 up j) -> [N, I]
torch::Tensor clampedSwiglu(const torch::Tensor& gateUp, double alpha, double limit);

// A rank's experts [f, f + L) in the hub/in-memory layout (compute dtype).
// Under MoE tensor parallelism the interleaved last dim of gateUp (and
// gateUpBias) holds whole (gate, up) pairs, and the rows of down the same
// I-slice; downBias is then left undefined on the ranks that must not add it
// (it is added once, after the tp reduction).
struct GptOssExperts {
  torch::Tensor gateUp;      // [L, H, 2I]
  torch::Tensor gateUpBias;  // [L, 2I]
  torch::Tensor down;        // [L, I, H]
  torch::Tensor downBias;    // [L, H] or undefined
  int64_t firstExpert = 0;
};

// Unweighted expert outputs for rows grouped by local expert.
// xPerm: [N, H], numTokensPerLocalExpert: L counts summing to N -> [N, H]
torch::Tensor gptOssGroupedExperts(const torch::Tensor& xPerm,
                                   const std::vector<int64_t>& numTokensPerLocalExpert,
                                   const GptOssExperts& experts, const ModelConfig& config,
                                   const PartialSums& partialSums = {});

// Reference loop over the local experts, weighted and summed per token
// (tokens routed elsewhere contribute nothing).
// x: [T, H], topkIdx/topkWeights: [T, k] -> [T, H] in x's dtype
torch::Tensor gptOssLoopExperts(const torch::Tensor& x, const torch::Tensor& topkIdx,
                                const torch::Tensor& topkWeights, const GptOssExperts& experts,
                                const ModelConfig& config);

// mlp.router: logits (bias included, compute dtype) and the top-k routing.
// x: [T, H], weight: [E, H], bias: [E]
RouterOutput gptOssRoute(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const ModelConfig& config);

// How a tensor-parallel rank runs its heads (defaults: one device).
struct GptOssAttentionOptions {
  // ps.wideInput: x arrives in fp32 holding dtype values; ps.wideOutput: the
  // o_proj result is returned in fp32 (a Partial sum to reduce, then round).
  PartialSums partialSums;
  // false under tp: o_proj.bias is left to the caller, to add ONCE to the
  // reduced output (styles/gpt_oss_attn_rowwise.cpp).
  bool addOutputBias = true;
};

// Self-attention of layer `layer` (sinks, biases, its window). Head counts
// are read from the weight shapes (a tp rank passes its heads' q/k/v rows,
// biases, sinks and o_proj columns). x: [B, S, H] -> [B, S, H]
torch::Tensor gptOssAttention(const torch::Tensor& x, const ParamMap& params, int64_t layer,
                              const ModelConfig& config, torch::ScalarType dtype,
                              const GptOssAttentionOptions& options = {});

// The single-device model. inputIds: [B, S] int64
ModelOutput gptOssForwardModel(const ModelConfig& config, const ParamMap& params,
                               const torch::Tensor& inputIds, const ForwardOptions& options);

}  // namespace moe::ref
