// The mixtral family: Hugging Face MixtralForCausalLM (transformers 5.x).
// What differs from qwen3_moe: no q_norm/k_norm; every layer is MoE with
// experts of width intermediate_size; the router always renormalises its
// top-k and keeps the weights in fp32 through the combine; the hub names the
// block block_sparse_moe and the expert projections w1 (gate), w3 (up),
// w2 (down).
#include "common/error.h"
#include "common/registry.h"
#include "reference/model/config.h"
#include "reference/model/config_fields.h"
#include "reference/model/family.h"

namespace moe::ref {
namespace {

using nlohmann::json;

// MixtralConfig's fields (transformers 5.25), honoured, inert or at the
// implemented value. An absent field means what MixtralConfig's default
// means (below), as Hugging Face reads it.
const fields::FieldTable& mixtralFields() {
  static const fields::FieldTable t = [] {
    fields::FieldTable t;
    t.family = "mixtral";
    t.honoured = {
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "num_local_experts",
        "num_experts", "num_experts_per_tok", "router_aux_loss_coef", "rms_norm_eps",
        "rope_theta", "rope_parameters", "tie_word_embeddings", "max_position_embeddings",
        "experts_implementation"};
    t.inert = fields::commonInertFields();
    t.maths = {
        {"attention_dropout", 0.0, "dropout on the attention weights during training"},
        {"hidden_act", "silu", "the expert activation"},
        {"router_jitter_noise", 0.0,
         "random multiplicative noise on the MoE input in training: a step would not be reproducible"},
        // MixtralAttention passes sliding_window to attention whenever it is
        // set (there is no use_sliding_window switch in this family).
        {"sliding_window", nullptr, "sliding-window attention: the harness attends to the whole causal prefix"},
        {"rope_scaling", nullptr, "the rotary frequencies"},
    };
    return t;
  }();
  return t;
}

class MixtralFamily : public ModelFamily {
 public:
  std::string name() const override { return "mixtral"; }
  std::string architecture() const override { return "MixtralForCausalLM"; }
  bool qkNorm() const override { return false; }
  bool fp32Combine() const override { return true; }
  HubExpertNaming hubExpertNaming() const override {
    return {"block_sparse_moe", {"w1", "w3", "w2"}};
  }

  void readConfig(const json& j, ModelConfig& c) const override {
    using namespace fields;
    refuseUnimplemented(j, mixtralFields());
    // MixtralConfig's defaults for what the file may leave out.
    int64_t expertWidth = 14336;
    c.numExperts = 8;
    c.numExpertsPerTok = 2;
    c.routerAuxLossCoef = 0.001;
    c.rmsNormEps = 1e-5;
    c.ropeTheta = 1e6;
    c.maxPositionEmbeddings = 4096 * 32;
    readInt(j, "vocab_size", c.vocabSize, /*required=*/true);
    readInt(j, "hidden_size", c.hiddenSize, /*required=*/true);
    readInt(j, "intermediate_size", expertWidth, /*required=*/false);
    readInt(j, "num_hidden_layers", c.numHiddenLayers, /*required=*/true);
    readAttentionShape(j, c.hiddenSize, /*defaultKvHeads=*/8, c.numAttentionHeads,
                       c.numKeyValueHeads, c.headDim);
    readNumExperts(j, c.numExperts);
    readInt(j, "num_experts_per_tok", c.numExpertsPerTok, /*required=*/false);
    readDouble(j, "router_aux_loss_coef", c.routerAuxLossCoef);
    readDouble(j, "rms_norm_eps", c.rmsNormEps);
    readDouble(j, "rope_theta", c.ropeTheta);
    readRopeParameters(j, c.ropeTheta);
    readBool(j, "tie_word_embeddings", c.tieWordEmbeddings);
    readInt(j, "max_position_embeddings", c.maxPositionEmbeddings, /*required=*/false);
    readString(j, "experts_implementation", c.expertsImplementation);
    // The shared model's form of "every layer is MoE, experts of width
    // intermediate_size, top-k renormalised".
    fields::setEveryLayerMoe(c, expertWidth);
  }

  void validate(const ModelConfig& c) const override {
    fields::validateEveryLayerMoe(c, "mixtral", "the router always renormalises its top-k");
  }

  json toJson(const ModelConfig& c) const override {
    return json{
        {"architectures", {architecture()}},
        {"model_type", c.modelType},
        {"vocab_size", c.vocabSize},
        {"hidden_size", c.hiddenSize},
        {"intermediate_size", c.moeIntermediateSize},
        {"num_hidden_layers", c.numHiddenLayers},
        {"num_attention_heads", c.numAttentionHeads},
        {"num_key_value_heads", c.numKeyValueHeads},
        {"head_dim", c.headDim},
        {"num_local_experts", c.numExperts},
        {"num_experts_per_tok", c.numExpertsPerTok},
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

MOE_REGISTER(ModelFamily, MixtralFamily);

}  // namespace moe::ref
