// The deepseek_v3 family: Hugging Face DeepseekV3ForCausalLM (transformers
// 5.25). What differs from qwen3_moe: multi-head latent attention
// (deepseek_v3.h), the first first_k_dense_replace layers dense and the rest
// MoE, ungated shared experts beside the routed ones, the bias-corrected
// sigmoid router with group-limited top-k and routed_scaling_factor, no
// softmax aux loss (the correction bias balances instead, by the harness's
// rule, bias_update_speed), and the routed experts' weights kept in fp32
// through the combine (as for Mixtral). The hub names the experts as
// Qwen3-MoE does (mlp.experts.N.gate_proj/up_proj/down_proj).
#include "common/error.h"
#include "common/registry.h"
#include "reference/model/config.h"
#include "reference/model/config_fields.h"
#include "reference/model/family.h"

namespace moe::ref {
namespace {

using nlohmann::json;

// DeepseekV3Config's fields (transformers 5.25). bias_update_speed is the
// harness's own (the balancing rule's coefficient, docs/families.md).
const fields::FieldTable& deepseekV3Fields() {
  static const fields::FieldTable t = [] {
    fields::FieldTable t;
    t.family = "deepseek_v3";
    t.honoured = {
        "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
        "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
        "qk_head_dim", "n_shared_experts", "n_routed_experts", "num_local_experts",
        "routed_scaling_factor", "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim",
        "v_head_dim", "qk_nope_head_dim", "n_group", "topk_group", "num_experts_per_tok",
        "first_k_dense_replace", "norm_topk_prob", "rms_norm_eps", "rope_theta",
        "rope_parameters", "rope_interleave", "tie_word_embeddings", "max_position_embeddings",
        "experts_implementation", "bias_update_speed"};
    t.inert = fields::commonInertFields();
    // pretraining_tp: not read by DeepseekV3's modeling code.
    // num_nextn_predict_layers / num_mtp_layers: transformers 5.25's
    // DeepseekV3ForCausalLM builds no multi-token-prediction module (its
    // weights, layer 61 of the released checkpoint, are ignored on load).
    t.inert.insert({"pretraining_tp", "num_nextn_predict_layers", "num_mtp_layers"});
    t.maths = {
        {"attention_bias", false, "biases on q_a_proj, kv_a_proj_with_mqa and o_proj"},
        {"attention_dropout", 0.0, "dropout on the attention weights during training"},
        {"hidden_act", "silu", "the MLP and expert activation"},
        {"rope_scaling", nullptr, "the rotary frequencies and the softmax scale (yarn mscale)"},
        // Hugging Face has no aux loss for this family; a coefficient would
        // have nothing to weigh.
        {"router_aux_loss_coef", 0.0, "an auxiliary loss DeepseekV3ForCausalLM does not compute"},
    };
    return t;
  }();
  return t;
}

// A field whose null Hugging Face cannot run with (it would crash or mean
// something else): refused by name instead of defaulted.
void refuseNull(const json& j, const char* key, const char* why) {
  auto it = j.find(key);
  if (it != j.end() && it->is_null()) fields::refuse(key, *it, why);
}

class DeepseekV3Family : public ModelFamily {
 public:
  std::string name() const override { return "deepseek_v3"; }
  std::string architecture() const override { return "DeepseekV3ForCausalLM"; }
  bool qkNorm() const override { return false; }
  // DeepseekV3TopkRouter's weights are fp32 (sigmoid scores); the experts'
  // grouped_mm path weighs and sums in fp32 and rounds once.
  bool fp32Combine() const override { return true; }
  HubExpertNaming hubExpertNaming() const override { return {}; }
  bool latentAttention() const override { return true; }
  bool biasCorrectedRouter() const override { return true; }
  bool routerAuxLoss() const override { return false; }

  void readConfig(const json& j, ModelConfig& c) const override {
    using namespace fields;
    refuseUnimplemented(j, deepseekV3Fields());
    for (const char* key : {"n_group", "topk_group", "first_k_dense_replace", "v_head_dim",
                            "num_experts_per_tok", "norm_topk_prob", "rope_interleave"})
      refuseNull(j, key, "DeepseekV3 cannot run without it");
    // DeepseekV3Config's defaults for absent fields.
    c.intermediateSize = 18432;
    c.moeIntermediateSize = 2048;
    c.numKeyValueHeads = 128;
    c.nSharedExperts = 1;
    c.numExperts = 256;
    c.routedScalingFactor = 2.5;
    c.kvLoraRank = 512;
    c.qLoraRank = 1536;
    c.qkRopeHeadDim = 64;
    c.vHeadDim = 128;
    c.qkNopeHeadDim = 128;
    c.nGroup = 8;
    c.topkGroup = 4;
    c.numExpertsPerTok = 8;
    int64_t firstDense = 3;
    c.normTopkProb = true;
    c.maxPositionEmbeddings = 4096;
    c.rmsNormEps = 1e-6;
    c.ropeTheta = 10000.0;
    c.ropeInterleave = true;
    c.tieWordEmbeddings = false;
    c.routerAuxLossCoef = 0.0;
    c.biasUpdateSpeed = 1e-3;  // the DeepSeek-V3 report's gamma
    readInt(j, "vocab_size", c.vocabSize, /*required=*/true);
    readInt(j, "hidden_size", c.hiddenSize, /*required=*/true);
    readInt(j, "intermediate_size", c.intermediateSize, /*required=*/false);
    readInt(j, "moe_intermediate_size", c.moeIntermediateSize, /*required=*/false);
    readInt(j, "num_hidden_layers", c.numHiddenLayers, /*required=*/true);
    readInt(j, "num_attention_heads", c.numAttentionHeads, /*required=*/true);
    // DeepseekV3Config: absent means 128, null means num_attention_heads.
    if (j.contains("num_key_value_heads") && j["num_key_value_heads"].is_null())
      c.numKeyValueHeads = c.numAttentionHeads;
    readInt(j, "num_key_value_heads", c.numKeyValueHeads, /*required=*/false);
    readInt(j, "n_shared_experts", c.nSharedExperts, /*required=*/false);
    readInt(j, "n_routed_experts", c.numExperts, /*required=*/false);
    if (const json* local = find(j, "num_local_experts")) {  // attribute_map alias
      int64_t n = 0;
      readInt(j, "num_local_experts", n, /*required=*/false);
      if (find(j, "n_routed_experts") && n != c.numExperts)
        fail("config: field n_routed_experts (", c.numExperts, ") and num_local_experts (",
             local->dump(), ") disagree");
      c.numExperts = n;
    }
    readDouble(j, "routed_scaling_factor", c.routedScalingFactor);
    readInt(j, "kv_lora_rank", c.kvLoraRank, /*required=*/false);
    // q_lora_rank null is meaningful: q_proj instead of the low-rank pair.
    if (j.contains("q_lora_rank") && j["q_lora_rank"].is_null()) c.qLoraRank = 0;
    else readInt(j, "q_lora_rank", c.qLoraRank, /*required=*/false);
    if (j.contains("q_lora_rank") && !j["q_lora_rank"].is_null() && c.qLoraRank <= 0)
      fail("config: field q_lora_rank must be > 0 or null (q_proj), got ", c.qLoraRank);
    readInt(j, "qk_rope_head_dim", c.qkRopeHeadDim, /*required=*/false);
    readInt(j, "v_head_dim", c.vHeadDim, /*required=*/false);
    readInt(j, "qk_nope_head_dim", c.qkNopeHeadDim, /*required=*/false);
    readInt(j, "n_group", c.nGroup, /*required=*/false);
    readInt(j, "topk_group", c.topkGroup, /*required=*/false);
    readInt(j, "num_experts_per_tok", c.numExpertsPerTok, /*required=*/false);
    readInt(j, "first_k_dense_replace", firstDense, /*required=*/false);
    readBool(j, "norm_topk_prob", c.normTopkProb);
    readDouble(j, "rms_norm_eps", c.rmsNormEps);
    readDouble(j, "rope_theta", c.ropeTheta);
    readRopeParameters(j, c.ropeTheta);
    readBool(j, "rope_interleave", c.ropeInterleave);
    readBool(j, "tie_word_embeddings", c.tieWordEmbeddings);
    readInt(j, "max_position_embeddings", c.maxPositionEmbeddings, /*required=*/false);
    readString(j, "experts_implementation", c.expertsImplementation);
    readDouble(j, "bias_update_speed", c.biasUpdateSpeed);
    readDouble(j, "router_aux_loss_coef", c.routerAuxLossCoef);  // 0 or refused above
    // DeepseekV3Config derives head_dim = qk_rope_head_dim (the rotary
    // tables' dim) and qk_head_dim = nope + rope; a file that says otherwise
    // is inconsistent (Hugging Face would take its head_dim for the tables).
    c.headDim = c.qkRopeHeadDim;
    if (const json* hd = find(j, "head_dim")) {
      int64_t v = 0;
      readInt(j, "head_dim", v, /*required=*/false);
      if (v != c.qkRopeHeadDim)
        fail("config: field head_dim = ", hd->dump(), " must equal qk_rope_head_dim (",
             c.qkRopeHeadDim, "): DeepseekV3 builds its rotary tables of head_dim");
    }
    if (const json* qh = find(j, "qk_head_dim")) {
      int64_t v = 0;
      readInt(j, "qk_head_dim", v, /*required=*/false);
      if (v != c.qkNopeHeadDim + c.qkRopeHeadDim)
        fail("config: field qk_head_dim = ", qh->dump(), " must equal qk_nope_head_dim + qk_rope_head_dim (",
             c.qkNopeHeadDim + c.qkRopeHeadDim, ")");
    }
    if (firstDense < 0)
      fail("config: field first_k_dense_replace must be >= 0, got ", firstDense);
    // The shared model's form of "layers [0, k) dense, the rest MoE".
    c.mlpOnlyLayers.clear();
    for (int64_t i = 0; i < std::min(firstDense, c.numHiddenLayers); ++i) c.mlpOnlyLayers.push_back(i);
    c.decoderSparseStep = 1;
    c.sharedExpertIntermediateSize = 0;
  }

  void validate(const ModelConfig& c) const override {
    auto positive = [](int64_t v, const char* key) {
      if (v <= 0) fail("config: field ", key, " must be > 0, got ", v);
    };
    positive(c.kvLoraRank, "kv_lora_rank");
    positive(c.qkNopeHeadDim, "qk_nope_head_dim");
    positive(c.qkRopeHeadDim, "qk_rope_head_dim");
    positive(c.vHeadDim, "v_head_dim");
    if (c.qLoraRank < 0) fail("config: field q_lora_rank must be > 0 or null, got ", c.qLoraRank);
    if (c.qkRopeHeadDim % 2 != 0)
      fail("config: field qk_rope_head_dim = ", c.qkRopeHeadDim,
           " must be even (the rotary dims come in pairs)");
    if (c.headDim != c.qkRopeHeadDim)
      fail("config: deepseek_v3: head_dim (", c.headDim, ") must equal qk_rope_head_dim (",
           c.qkRopeHeadDim, ")");
    if (c.numKeyValueHeads != c.numAttentionHeads)
      fail("config: field num_key_value_heads = ", c.numKeyValueHeads,
           " must equal num_attention_heads (", c.numAttentionHeads,
           "): latent attention expands k and v per head (Hugging Face's repeat_kv would fail)");
    if (c.sharedExpertIntermediateSize != 0)
      fail("config: deepseek_v3: shared_expert_intermediate_size must be 0 (the shared experts are "
           "n_shared_experts), got ", c.sharedExpertIntermediateSize);
    if (c.decoderSparseStep != 1)
      fail("config: deepseek_v3: decoder_sparse_step must be 1, got ", c.decoderSparseStep);
    for (size_t i = 0; i < c.mlpOnlyLayers.size(); ++i)
      if (c.mlpOnlyLayers[i] != static_cast<int64_t>(i))
        fail("config: deepseek_v3: the dense layers are the first first_k_dense_replace ones, got "
             "dense layer ", c.mlpOnlyLayers[i], " at position ", i);
    if (!(c.biasUpdateSpeed >= 0))
      fail("config: field bias_update_speed must be >= 0, got ", c.biasUpdateSpeed);
    if (c.routerAuxLossCoef != 0)
      fail("config: field router_aux_loss_coef = ", c.routerAuxLossCoef,
           " is not implemented (deepseek_v3 has no aux loss)");
    if (c.numMoeLayers() == 0) return;
    positive(c.numExperts, "n_routed_experts");
    positive(c.nSharedExperts, "n_shared_experts");
    positive(c.nGroup, "n_group");
    positive(c.topkGroup, "topk_group");
    if (!(c.routedScalingFactor > 0))
      fail("config: field routed_scaling_factor must be > 0, got ", c.routedScalingFactor);
    if (c.topkGroup > c.nGroup)
      fail("config: field topk_group = ", c.topkGroup, " exceeds n_group = ", c.nGroup);
    if (c.numExperts % c.nGroup != 0)
      fail("config: field n_routed_experts = ", c.numExperts, " is not divisible by n_group = ",
           c.nGroup, " (experts are split into equal groups)");
    const int64_t perGroup = c.numExperts / c.nGroup;
    if (perGroup < 2)
      fail("config: field n_group = ", c.nGroup, " leaves ", perGroup,
           " expert per group (n_routed_experts = ", c.numExperts,
           "); a group is scored by its two best experts, so each needs at least 2");
    if (c.numExpertsPerTok > c.topkGroup * perGroup)
      fail("config: field num_experts_per_tok = ", c.numExpertsPerTok,
           " exceeds the experts of topk_group = ", c.topkGroup, " groups of ", perGroup,
           " (", c.topkGroup * perGroup, ")");
  }

  json toJson(const ModelConfig& c) const override {
    int64_t firstDense = static_cast<int64_t>(c.mlpOnlyLayers.size());
    return json{
        {"architectures", {architecture()}},
        {"model_type", c.modelType},
        {"vocab_size", c.vocabSize},
        {"hidden_size", c.hiddenSize},
        {"intermediate_size", c.intermediateSize},
        {"moe_intermediate_size", c.moeIntermediateSize},
        {"num_hidden_layers", c.numHiddenLayers},
        {"num_attention_heads", c.numAttentionHeads},
        {"num_key_value_heads", c.numKeyValueHeads},
        {"n_shared_experts", c.nSharedExperts},
        {"n_routed_experts", c.numExperts},
        {"routed_scaling_factor", c.routedScalingFactor},
        {"kv_lora_rank", c.kvLoraRank},
        {"q_lora_rank", c.qLoraRank > 0 ? json(c.qLoraRank) : json(nullptr)},
        {"qk_rope_head_dim", c.qkRopeHeadDim},
        {"v_head_dim", c.vHeadDim},
        {"qk_nope_head_dim", c.qkNopeHeadDim},
        {"n_group", c.nGroup},
        {"topk_group", c.topkGroup},
        {"num_experts_per_tok", c.numExpertsPerTok},
        {"first_k_dense_replace", firstDense},
        {"norm_topk_prob", c.normTopkProb},
        {"rms_norm_eps", c.rmsNormEps},
        {"rope_theta", c.ropeTheta},
        {"rope_interleave", c.ropeInterleave},
        {"tie_word_embeddings", c.tieWordEmbeddings},
        {"max_position_embeddings", c.maxPositionEmbeddings},
        {"experts_implementation", c.expertsImplementation},
        {"bias_update_speed", c.biasUpdateSpeed},
    };
  }
};

}  // namespace

MOE_REGISTER(ModelFamily, DeepseekV3Family);

ModelConfig tinyDeepseekV3TestConfig() {
  ModelConfig c = tinyTestConfig();
  c.modelType = "deepseek_v3";
  c.numHiddenLayers = 3;
  c.numAttentionHeads = 4;
  c.numKeyValueHeads = 4;
  c.qLoraRank = 12;
  c.kvLoraRank = 8;
  c.qkNopeHeadDim = 4;
  c.qkRopeHeadDim = 4;
  c.vHeadDim = 6;
  c.headDim = 4;
  c.ropeInterleave = true;
  c.numExperts = 8;
  c.numExpertsPerTok = 2;
  c.nGroup = 4;
  c.topkGroup = 2;
  c.nSharedExperts = 1;
  c.routedScalingFactor = 2.5;
  c.normTopkProb = true;
  c.mlpOnlyLayers = {0};
  c.routerAuxLossCoef = 0.0;
  c.biasUpdateSpeed = 1e-3;
  c.validate();
  return c;
}

}  // namespace moe::ref
