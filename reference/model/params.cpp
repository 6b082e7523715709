#include "reference/model/params.h"

#include "common/error.h"
#include "reference/model/deepseek_v3.h"
#include "reference/model/family.h"
#include "reference/model/gpt_oss_model.h"

namespace moe::ref {

std::string layerPrefix(int64_t layer) { return str("model.layers.", layer, "."); }

std::vector<ParamSpec> parameterSpecs(const ModelConfig& c) {
  if (familyOf(c).gptOssLayers()) return gptOssParameterSpecs(c);
  const int64_t h = c.hiddenSize, d = c.headDim;
  std::vector<ParamSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocabSize, h}});
  for (int64_t i = 0; i < c.numHiddenLayers; ++i) {
    const std::string p = layerPrefix(i);
    if (familyOf(c).latentAttention()) {
      appendLatentAttentionSpecs(c, p, specs);  // deepseek_v3
    } else {
    specs.push_back({p + "self_attn.q_proj.weight", {c.numAttentionHeads * d, h}});
    specs.push_back({p + "self_attn.k_proj.weight", {c.numKeyValueHeads * d, h}});
    specs.push_back({p + "self_attn.v_proj.weight", {c.numKeyValueHeads * d, h}});
    specs.push_back({p + "self_attn.o_proj.weight", {h, c.numAttentionHeads * d}});
    }
    if (familyOf(c).qkNorm()) {
      specs.push_back({p + "self_attn.q_norm.weight", {d}});
      specs.push_back({p + "self_attn.k_norm.weight", {d}});
    }
    if (c.isMoeLayer(i)) {
      const int64_t e = c.numExperts, m = c.moeIntermediateSize;
      specs.push_back({p + "mlp.gate.weight", {e, h}});
      if (familyOf(c).biasCorrectedRouter()) specs.push_back({correctionBiasName(i), {e}});
      specs.push_back({p + "mlp.experts.gate_up_proj", {e, 2 * m, h}});
      specs.push_back({p + "mlp.experts.down_proj", {e, h, m}});
      if (c.sharedExpertIntermediateSize > 0) {
        const int64_t s = c.sharedExpertIntermediateSize;
        specs.push_back({p + "mlp.shared_expert.gate_proj.weight", {s, h}});
        specs.push_back({p + "mlp.shared_expert.up_proj.weight", {s, h}});
        specs.push_back({p + "mlp.shared_expert.down_proj.weight", {h, s}});
        specs.push_back({p + "mlp.shared_expert_gate.weight", {1, h}});
      }
      if (c.nSharedExperts > 0) {  // deepseek_v3: ungated, width moe_intermediate_size * n
        const int64_t s = m * c.nSharedExperts;
        specs.push_back({p + "mlp.shared_experts.gate_proj.weight", {s, h}});
        specs.push_back({p + "mlp.shared_experts.up_proj.weight", {s, h}});
        specs.push_back({p + "mlp.shared_experts.down_proj.weight", {h, s}});
      }
    } else {
      specs.push_back({p + "mlp.gate_proj.weight", {c.intermediateSize, h}});
      specs.push_back({p + "mlp.up_proj.weight", {c.intermediateSize, h}});
      specs.push_back({p + "mlp.down_proj.weight", {h, c.intermediateSize}});
    }
    specs.push_back({p + "input_layernorm.weight", {h}});
    specs.push_back({p + "post_attention_layernorm.weight", {h}});
  }
  specs.push_back({"model.norm.weight", {h}});
  if (!c.tieWordEmbeddings) specs.push_back({"lm_head.weight", {c.vocabSize, h}});
  return specs;
}

const torch::Tensor& getParam(const ParamMap& params, const std::string& name) {
  const torch::Tensor* t = params.find(name);
  if (t == nullptr) fail("model: parameter ", name, " is missing");
  return *t;
}

ParamMap cloneParams(const ParamMap& params, std::optional<torch::ScalarType> dtype) {
  ParamMap out;
  for (const auto& item : params) {
    auto t = item.value().detach();
    out.insert(item.key(), dtype ? t.to(*dtype, /*non_blocking=*/false, /*copy=*/true) : t.clone());
  }
  return out;
}

}  // namespace moe::ref
