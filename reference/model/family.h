#pragma once
// ModelFamily: what differs between the model families the harness
// implements (Hugging Face `model_type`), as one plug-in per family.
//
// How to add a family (see common/registry.h for the idiom):
//   1. Write reference/model/family_<model_type>.cpp with a class deriving
//      from ModelFamily: its config field table (honoured / inert / refused,
//      config_fields.h), its reader and writer of config.json, and its
//      structural traits below.
//   2. End the file with MOE_REGISTER(ModelFamily, MyFamily);
//   3. Add the file to reference/model/CMakeLists.txt and a section to
//      docs/families.md.
// The families share one in-memory model: ModelConfig's fields, the fused
// parameter names of parameterSpecs() and one forward (qwen3_moe.h); a
// family says which parts it uses (traits) and how its checkpoints name the
// expert weights on the hub.
//
// Contract: readConfig() reads every field of a config.json object or
// throws moe::HarnessError naming the field and its value (never half-reads:
// config.h); toJson(readConfig(j)) read again gives the same config.
#include <array>
#include <string>

#include <nlohmann/json.hpp>

#include "reference/model/config.h"

namespace moe::ref {

// How a family's hub checkpoints (what save_pretrained writes) name the
// expert weights, relative to the in-memory names
// model.layers.N.mlp.{gate.weight, experts.gate_up_proj, experts.down_proj}:
//   model.layers.N.<hubBlock>.gate.weight                      router
//   model.layers.N.<hubBlock>.experts.<e>.<projs[p]>.weight    p = gate, up, down
// qwen3_moe: hubBlock "mlp", projs gate_proj / up_proj / down_proj;
// mixtral:   hubBlock "block_sparse_moe", projs w1 / w3 / w2.
struct HubExpertNaming {
  std::string hubBlock = "mlp";
  std::array<std::string, 3> projs = {"gate_proj", "up_proj", "down_proj"};
  // gpt_oss: the hub keeps the fused tensors, and they are transposed:
  // gate_up_proj [E, H, 2I] (gate/up interleaved on the last dim) and
  // down_proj [E, I, H], each with a _bias; there is no per-expert naming.
  bool transposedFused = false;
};

class ModelFamily {
 public:
  static constexpr const char* kPluginKind = "model family";
  virtual ~ModelFamily() = default;

  // The Hugging Face model_type, e.g. "qwen3_moe".
  virtual std::string name() const = 0;
  // The Hugging Face class written to "architectures".
  virtual std::string architecture() const = 0;

  // Fills `c` (whose modelType is already name()) from a config.json
  // object, refusing fields it does not honour (config_fields.h).
  virtual void readConfig(const nlohmann::json& j, ModelConfig& c) const = 0;
  // Throws moe::HarnessError for a ModelConfig this family cannot have
  // (called by ModelConfig::validate after the shared checks).
  virtual void validate(const ModelConfig& c) const = 0;
  // config.json in this family's field names.
  virtual nlohmann::json toJson(const ModelConfig& c) const = 0;

  // --- structural traits ---
  // Per-head RMSNorm of q and k (self_attn.{q,k}_norm.weight).
  virtual bool qkNorm() const = 0;
  // The routing weights stay fp32 through the combine: the expert outputs
  // are weighted and summed in fp32 and rounded to the compute dtype once
  // (Mixtral; transformers 5.25 keeps its router's fp32 top-k weights).
  // Otherwise the weights are cast to the compute dtype first (Qwen3-MoE).
  virtual bool fp32Combine() const = 0;
  virtual HubExpertNaming hubExpertNaming() const = 0;
  // GPT-OSS's layers (gpt_oss_model.h): attention with q/k/v/o biases, sinks
  // and per-layer sliding windows; a router with a bias and a softmax over
  // the top-k logits; experts [E, H, 2I] interleaved, with biases and the
  // clamped SwiGLU. The model has its own parameter specs and forward.
  virtual bool gptOssLayers() const { return false; }

  // --- traits added with deepseek_v3 (defaults: the Qwen3-MoE / Mixtral form) ---
  // Multi-head latent attention (reference/model/deepseek_v3.h) instead of
  // q/k/v/o_proj with per-head q/k norms.
  virtual bool latentAttention() const { return false; }
  // The router is DeepSeek-V3's: fp32 sigmoid scores, selection on scores +
  // mlp.gate.e_score_correction_bias (a non-trained [E] tensor) with
  // group-limited top-k, weights from the unbiased scores, renormalised when
  // norm_topk_prob, times routed_scaling_factor (deepseek_v3.h). Otherwise
  // the softmax router of moe_block.h.
  virtual bool biasCorrectedRouter() const { return false; }
  // The loss carries Hugging Face's softmax load-balancing aux term
  // (router_aux_loss_coef * aux). false: aux is 0 (DeepSeek-V3 balances
  // with the correction bias instead; Hugging Face computes no aux there).
  virtual bool routerAuxLoss() const { return true; }

  // The registered family for `modelType`, or a HarnessError
  // "config: model_type "x" is not an implemented family (implemented: ...)".
  static const ModelFamily& get(const std::string& modelType);
  // "mixtral, qwen3_moe"
  static std::string implementedNames();
};

// ModelFamily::get(config.modelType)
const ModelFamily& familyOf(const ModelConfig& config);

// tinyTestConfig()'s sizes as a mixtral config: every layer MoE (experts of
// width 8), no q/k norms.
ModelConfig tinyMixtralTestConfig();

// tinyTestConfig()'s sizes as a gpt_oss config: every layer MoE (experts of
// width 8), layers alternating sliding (window 3) / full attention, default
// rope, swiglu_limit 7.
ModelConfig tinyGptOssTestConfig();
// A tiny deepseek_v3 config (deepseek_v3.cpp): layer 0 dense, layers 1-2
// MoE, 8 experts in 4 groups (topk_group 2, top-2), one shared expert, MLA
// with q_lora_rank 12, kv_lora_rank 8, nope/rope/v head dims 4/4/6,
// interleaved rotary, routed_scaling_factor 2.5.
ModelConfig tinyDeepseekV3TestConfig();

}  // namespace moe::ref
