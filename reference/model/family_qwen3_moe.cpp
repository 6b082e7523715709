// The qwen3_moe family: Hugging Face Qwen3MoeForCausalLM (transformers 5.x).
#include "common/error.h"
#include "common/registry.h"
#include "reference/model/config.h"
#include "reference/model/config_fields.h"
#include "reference/model/family.h"

namespace moe::ref {
namespace {

using nlohmann::json;

// Fields read into ModelConfig (Hugging Face names, transformers 5.x;
// num_local_experts is what Qwen3MoeConfig writes for num_experts,
// rope_parameters what it writes for rope_theta). experts_implementation
// and shared_expert_intermediate_size (Qwen2-MoE's shared expert) are the
// harness's own extensions. Inert beyond the common ones: max_window_layers
// and sliding_window, which Hugging Face reads only when use_sliding_window
// is true (refused).
const fields::FieldTable& qwen3MoeFields() {
  static const fields::FieldTable t = [] {
    fields::FieldTable t;
    t.family = "qwen3_moe";
    t.honoured = {
        "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
        "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
        "num_experts", "num_local_experts", "num_experts_per_tok", "norm_topk_prob",
        "mlp_only_layers", "decoder_sparse_step", "shared_expert_intermediate_size",
        "router_aux_loss_coef", "rms_norm_eps", "rope_theta", "rope_parameters",
        "tie_word_embeddings", "max_position_embeddings", "experts_implementation"};
    t.inert = fields::commonInertFields();
    t.inert.insert({"max_window_layers", "sliding_window"});
    t.maths = {
        {"attention_bias", false, "biases on q/k/v/o_proj"},
        {"attention_dropout", 0.0, "dropout on the attention weights during training"},
        {"hidden_act", "silu", "the MLP and expert activation"},
        {"use_sliding_window", false, "sliding-window attention"},
        {"rope_scaling", nullptr, "the rotary frequencies"},
    };
    return t;
  }();
  return t;
}

class Qwen3MoeFamily : public ModelFamily {
 public:
  std::string name() const override { return "qwen3_moe"; }
  std::string architecture() const override { return "Qwen3MoeForCausalLM"; }
  bool qkNorm() const override { return true; }
  bool fp32Combine() const override { return false; }
  HubExpertNaming hubExpertNaming() const override { return {}; }

  void readConfig(const json& j, ModelConfig& c) const override {
    using namespace fields;
    refuseUnimplemented(j, qwen3MoeFields());
    readInt(j, "vocab_size", c.vocabSize, /*required=*/true);
    readInt(j, "hidden_size", c.hiddenSize, /*required=*/true);
    readInt(j, "intermediate_size", c.intermediateSize, /*required=*/false);
    readInt(j, "moe_intermediate_size", c.moeIntermediateSize, /*required=*/false);
    readInt(j, "num_hidden_layers", c.numHiddenLayers, /*required=*/true);
    readAttentionShape(j, c.hiddenSize, /*defaultKvHeads=*/0, c.numAttentionHeads,
                       c.numKeyValueHeads, c.headDim);
    readNumExperts(j, c.numExperts);
    readInt(j, "num_experts_per_tok", c.numExpertsPerTok, /*required=*/false);
    readBool(j, "norm_topk_prob", c.normTopkProb);
    readIntList(j, "mlp_only_layers", c.mlpOnlyLayers);
    readInt(j, "decoder_sparse_step", c.decoderSparseStep, /*required=*/false);
    readInt(j, "shared_expert_intermediate_size", c.sharedExpertIntermediateSize,
            /*required=*/false);
    readDouble(j, "router_aux_loss_coef", c.routerAuxLossCoef);
    readDouble(j, "rms_norm_eps", c.rmsNormEps);
    readDouble(j, "rope_theta", c.ropeTheta);
    readRopeParameters(j, c.ropeTheta);
    readBool(j, "tie_word_embeddings", c.tieWordEmbeddings);
    readInt(j, "max_position_embeddings", c.maxPositionEmbeddings, /*required=*/false);
    readString(j, "experts_implementation", c.expertsImplementation);
  }

  void validate(const ModelConfig&) const override {}

  json toJson(const ModelConfig& c) const override {
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
        {"head_dim", c.headDim},
        {"num_experts", c.numExperts},
        {"num_experts_per_tok", c.numExpertsPerTok},
        {"norm_topk_prob", c.normTopkProb},
        {"mlp_only_layers", c.mlpOnlyLayers},
        {"decoder_sparse_step", c.decoderSparseStep},
        {"shared_expert_intermediate_size", c.sharedExpertIntermediateSize},
        {"router_aux_loss_coef", c.routerAuxLossCoef},
        {"rms_norm_eps", c.rmsNormEps},
        {"rope_theta", c.ropeTheta},
        {"tie_word_embeddings", c.tieWordEmbeddings},
        {"max_position_embeddings", c.maxPositionEmbeddings},
        {"experts_implementation", c.expertsImplementation},
    };
  }
};

}  // namespace

MOE_REGISTER(ModelFamily, Qwen3MoeFamily);

}  // namespace moe::ref
