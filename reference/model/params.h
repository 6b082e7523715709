#pragma once
// The parameters of the reference model: an ordered map from Hugging Face
// parameter name to tensor, in the order Hugging Face registers them.
//
// Later plans shard these tensors across ranks; the model reads every size it
// can from the tensors it is given (local heads, local experts), not from the
// config, so a sharded map can be fed to the same functions.
#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "reference/model/config.h"

namespace moe::ref {

using ParamMap = torch::OrderedDict<std::string, torch::Tensor>;

struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Every parameter of the full (unsharded) model, in Hugging Face order:
// model.embed_tokens.weight; per layer self_attn.{q,k,v,o}_proj.weight,
// self_attn.{q,k}_norm.weight, mlp.* (dense gate/up/down_proj.weight, or MoE
// gate.weight, experts.gate_up_proj [E, 2I, H], experts.down_proj [E, H, I],
// shared_expert.{gate,up,down}_proj.weight, shared_expert_gate.weight),
// input_layernorm.weight, post_attention_layernorm.weight; model.norm.weight;
// lm_head.weight unless tie_word_embeddings. deepseek_v3 (family traits):
// the latent-attention projections instead of q/k/v/o (deepseek_v3.h),
// mlp.gate.e_score_correction_bias [E] after the router (not trained by the
// optimizer: isCorrectionBias) and mlp.shared_experts.{gate,up,down}_proj.
std::vector<ParamSpec> parameterSpecs(const ModelConfig& config);

// "model.layers.3."
std::string layerPrefix(int64_t layer);

// params[name], or a HarnessError naming the missing parameter.
const torch::Tensor& getParam(const ParamMap& params, const std::string& name);

// Deep copy (detached) of a parameter map, optionally converted to dtype.
ParamMap cloneParams(const ParamMap& params,
                     std::optional<torch::ScalarType> dtype = std::nullopt);

}  // namespace moe::ref
