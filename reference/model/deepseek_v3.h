#pragma once
// The maths of the deepseek_v3 family (Hugging Face DeepseekV3ForCausalLM,
// transformers 5.25) that the shared model does not have: multi-head latent
// attention, the bias-corrected group-limited router, and the harness's
// training rule for the correction bias. The single-device forward
// (qwen3_moe.cpp) and the distributed one ask the family's traits
// (family.h: latentAttention, biasCorrectedRouter, routerAuxLoss) and call
// these.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "reference/model/config.h"
#include "reference/model/moe_block.h"
#include "reference/model/params.h"
#include "reference/model/partial_sums.h"

namespace moe::ref {

// Hugging Face builds q_a_layernorm and kv_a_layernorm with RMSNorm's
// default eps, not rms_norm_eps.
constexpr double kLatentNormEps = 1e-6;

// Multi-head latent attention of one layer, Hugging Face's DeepseekV3Attention:
//   q  = q_b_proj(q_a_layernorm(q_a_proj(x)))   (q_proj(x) when q_lora_rank is 0)
//        per head [nope | rope]
//   c  = kv_a_proj_with_mqa(x) = [kv latent (kv_lora_rank) | k_rot (rope, one head)]
//   kv = kv_b_proj(kv_a_layernorm(latent)), per head [k_nope | v]
//   rotary on q's rope part and k_rot (interleaved pairs when rope_interleave,
//   else rotate-half; tables of dim qk_rope_head_dim), k = [k_nope | k_rot]
//   causal softmax(q k^T * (nope + rope)^-0.5) v, then o_proj.
// The head count is read from q_b_proj / q_proj's rows (nh * (nope + rope)),
// so a tensor-parallel rank passes its heads' rows of q_b_proj and kv_b_proj
// and its columns of o_proj. partialSums as for attentionForward
// (partial_sums.h). x: [B, S, H] -> [B, S, H]
torch::Tensor latentAttentionForward(const torch::Tensor& x, const ParamMap& params,
                                     const std::string& prefix, const ModelConfig& config,
                                     torch::ScalarType dtype, const PartialSums& partialSums = {});

// The parameters of one MLA layer (after "<prefix>self_attn."), in Hugging
// Face's order: q_a_proj [qr, H], q_a_layernorm [qr], q_b_proj [nh*(nope+rope), qr]
// (or q_proj [nh*(nope+rope), H]), kv_a_proj_with_mqa [kvr+rope, H],
// kv_a_layernorm [kvr], kv_b_proj [nh*(nope+v), kvr], o_proj [H, nh*v].
void appendLatentAttentionSpecs(const ModelConfig& c, const std::string& layerPrefix,
                                std::vector<ParamSpec>& specs);

// "model.layers.N.mlp.gate.e_score_correction_bias"
std::string correctionBiasName(int64_t layer);
// True for a correction bias: state the optimizer does not train (it gets no
// gradient; the harness's balancing rule updates it after each step).
bool isCorrectionBias(const std::string& name);

// DeepSeek-V3's router (Hugging Face DeepseekV3TopkRouter):
//   logits = x W^T in fp32 (x and the fp32 master W upcast; Hugging Face keeps
//            gate.weight in fp32 under bf16), scores = sigmoid(logits)
//   choice = scores + bias
//   group score = sum of the 2 best choice values of each of n_group groups;
//   the topk_group best groups are kept, the other experts masked to -inf;
//   topkIdx = the num_experts_per_tok best choice values (ties to the lower
//   index, as every harness top-k), topkWeights = scores at topkIdx,
//   divided by (their sum + 1e-20) when norm_topk_prob, times
//   routed_scaling_factor.
// Gradients reach the logits through the gathered scores; the bias and the
// selection carry none. routing.probs holds the sigmoid scores.
// x: [T, H] compute dtype, routerWeight: [E, H] fp32 master, bias: [E].
// groupExperts (a mutant's only): [E] bool, the experts the group scores
// see (the others count as -inf there); undefined: all.
RouterOutput biasCorrectedRoute(const torch::Tensor& x, const torch::Tensor& routerWeight,
                                const torch::Tensor& bias, const ModelConfig& config,
                                const torch::Tensor& groupExperts = {});

// The group-limited selection alone (no autograd).
// choice: [T, E] (scores + bias) -> topkIdx [T, k] int64, best first;
// groupExperts as above.
torch::Tensor groupLimitedTopk(const torch::Tensor& choice, int64_t nGroup, int64_t topkGroup,
                               int64_t topK, const torch::Tensor& groupExperts = {});

// Per expert, how many (token, slot) selections topkIdx holds: [E] fp32
// (exact below 2^24 per expert). topkIdx: [T, k] global expert ids
torch::Tensor expertLoads(const torch::Tensor& topkIdx, int64_t numExperts);

// The harness's auxiliary-loss-free balancing rule (DeepSeek-V3 report,
// section 2.1.2; Hugging Face's model does not update the bias):
//   bias_e += speed * sign(mean_e' load_e' - load_e)
// with load the global batch's selections per expert of this layer (sign(0)
// = 0). In place, no autograd. bias: [E] fp32, load: [E]
void applyBiasUpdate(torch::Tensor& bias, const torch::Tensor& load, double speed);

// The rule on every MoE layer's bias in `params` (layer order = loads order).
// loads: one [E] per MoE layer, counted over the global batch.
void updateCorrectionBiases(const ModelConfig& config, ParamMap& params,
                            const std::vector<torch::Tensor>& loads);

}  // namespace moe::ref
