// The gpt_oss family: Hugging Face GptOssForCausalLM (transformers 5.25).
// What differs from qwen3_moe (the maths is in gpt_oss_model.h): every layer
// is MoE with experts of width intermediate_size; attention has q/k/v/o
// biases, one learned sink logit per head and, per layer_types, a sliding
// window; the router (mlp.router) has a bias and takes a softmax over its
// top-k logits; the experts are fused on the hub and in memory as
// gate_up_proj [E, H, 2I] (gate/up interleaved) and down_proj [E, I, H],
// each with a bias, and apply the clamped SwiGLU (swiglu_alpha,
// swiglu_limit).
//
// RoPE: only rope_type "default" is implemented. GptOssConfig reads an
// absent rope_parameters as yarn scaling (factor 32, original 4096
// positions), so an absent rope_parameters is refused like an explicit yarn
// one: the harness does not implement yarn (docs/families.md).
#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "common/registry.h"
#include "reference/model/config.h"
#include "reference/model/config_fields.h"
#include "reference/model/family.h"

namespace moe::ref {
namespace {

using nlohmann::json;


// GptOssConfig's fields (transformers 5.25), honoured, inert or at the
// implemented value. hidden_act is inert: GptOssExperts applies the clamped
// SwiGLU whatever hidden_act says (the field is written but never read).
const fields::FieldTable& gptOssFields() {
  static const fields::FieldTable t = [] {
    fields::FieldTable t;
    t.family = "gpt_oss";
    t.honoured = {
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "num_local_experts",
        "num_experts", "num_experts_per_tok", "router_aux_loss_coef", "rms_norm_eps",
        "rope_theta", "rope_parameters", "tie_word_embeddings", "max_position_embeddings",
        "experts_implementation", "swiglu_alpha", "swiglu_limit", "layer_types",
        "sliding_window"};
    t.inert = fields::commonInertFields();
    t.inert.insert("hidden_act");
    t.maths = {
        {"attention_bias", true, "the model's q/k/v/o_proj biases (gpt_oss always has them here)"},
        {"attention_dropout", 0.0, "dropout on the attention weights during training"},
        {"rope_scaling", nullptr, "the rotary frequencies"},
    };
    return t;
  }();
  return t;
}

class GptOssFamily : public ModelFamily {
 public:
  std::string name() const override { return "gpt_oss"; }
  std::string architecture() const override { return "GptOssForCausalLM"; }
  bool qkNorm() const override { return false; }
  // GptOssTopKRouter's scores are in the logits' (compute) dtype and the
  // experts multiply by them there.
  bool fp32Combine() const override { return false; }
  HubExpertNaming hubExpertNaming() const override {
    HubExpertNaming n;
    n.transposedFused = true;
    return n;
  }
  bool gptOssLayers() const override { return true; }

  void readConfig(const json& j, ModelConfig& c) const override {
    using namespace fields;
    refuseUnimplemented(j, gptOssFields());
    if (!find(j, "rope_parameters"))
      refuse("rope_parameters", nullptr,
             "GptOssConfig reads an absent rope_parameters as yarn scaling (factor 32, "
             "original_max_position_embeddings 4096); the harness implements rope_type "
             "\"default\" only: write rope_parameters {\"rope_type\": \"default\", \"rope_theta\": ...}");
    // GptOssConfig's defaults for what the file may leave out.
    int64_t expertWidth = 2880;
    c.numExperts = 128;
    c.numExpertsPerTok = 4;
    c.routerAuxLossCoef = 0.001;
    c.rmsNormEps = 1e-5;
    c.ropeTheta = 150000.0;  // GptOssConfig.default_theta
    c.maxPositionEmbeddings = 131072;
    c.swigluAlpha = 1.702;
    c.swigluLimit = 7.0;
    c.slidingWindow = 128;
    readInt(j, "vocab_size", c.vocabSize, /*required=*/true);
    readInt(j, "hidden_size", c.hiddenSize, /*required=*/true);
    readInt(j, "intermediate_size", expertWidth, /*required=*/false);
    readInt(j, "num_hidden_layers", c.numHiddenLayers, /*required=*/true);
    c.headDim = 64;  // GptOssConfig's head_dim default (not hidden / heads)
    readAttentionShape(j, c.hiddenSize, /*defaultKvHeads=*/8, c.numAttentionHeads,
                       c.numKeyValueHeads, c.headDim);
    if (!j.contains("head_dim")) c.headDim = 64;  // null: hidden_size / heads, as read above
    readNumExperts(j, c.numExperts);
    readInt(j, "num_experts_per_tok", c.numExpertsPerTok, /*required=*/false);
    readDouble(j, "router_aux_loss_coef", c.routerAuxLossCoef);
    readDouble(j, "rms_norm_eps", c.rmsNormEps);
    readDouble(j, "rope_theta", c.ropeTheta);
    readRopeParameters(j, c.ropeTheta);
    readBool(j, "tie_word_embeddings", c.tieWordEmbeddings);
    readInt(j, "max_position_embeddings", c.maxPositionEmbeddings, /*required=*/false);
    readString(j, "experts_implementation", c.expertsImplementation);
    readDouble(j, "swiglu_alpha", c.swigluAlpha);
    readDouble(j, "swiglu_limit", c.swigluLimit);
    // sliding_window null: no window (a sliding layer then cannot be).
    if (const json* w = find(j, "sliding_window"); w) {
      readInt(j, "sliding_window", c.slidingWindow, /*required=*/false);
    } else if (j.contains("sliding_window")) {
      c.slidingWindow = 0;
    }
    c.layerTypes.clear();
    if (const json* lt = find(j, "layer_types")) {
      if (!lt->is_array())
        fail("config: field layer_types: expected a list of strings, got ", lt->type_name(), " (",
             lt->dump(), ")");
      for (const auto& e : *lt) {
        if (!e.is_string())
          fail("config: field layer_types: expected a list of strings, element ", e.dump(), " is ",
               e.type_name());
        c.layerTypes.push_back(e.get<std::string>());
      }
    } else {
      // GptOssConfig: layer i slides iff i + 1 is odd.
      for (int64_t i = 0; i < c.numHiddenLayers; ++i)
        c.layerTypes.push_back((i + 1) % 2 ? kSlidingAttention : kFullAttention);
    }
    // The shared model's form of "every layer is MoE, experts of width
    // intermediate_size": the softmax over the k largest logits equals the
    // full softmax renormalised over its top k.
    fields::setEveryLayerMoe(c, expertWidth);
  }

  void validate(const ModelConfig& c) const override {
    fields::validateEveryLayerMoe(c, "gpt_oss", "the router's softmax is over its top-k");
    if (static_cast<int64_t>(c.layerTypes.size()) != c.numHiddenLayers)
      fail("config: field layer_types has ", c.layerTypes.size(), " entries but num_hidden_layers is ",
           c.numHiddenLayers);
    bool anySliding = false;
    for (size_t i = 0; i < c.layerTypes.size(); ++i) {
      const std::string& t = c.layerTypes[i];
      if (t != kSlidingAttention && t != kFullAttention)
        fields::refuse("layer_types[" + std::to_string(i) + "]", t,
                       "gpt_oss layers are \"sliding_attention\" or \"full_attention\"");
      anySliding = anySliding || t == kSlidingAttention;
    }
    if (c.slidingWindow < 0 || (anySliding && c.slidingWindow < 1))
      fail("config: field sliding_window = ", c.slidingWindow,
           " but layer_types has sliding_attention layers: the window must be >= 1 "
           "(a query always sees itself)");
    // The clamp keeps up in [-limit, limit]: an empty interval otherwise.
    if (!(c.swigluLimit > 0))
      fail("config: field swiglu_limit = ", c.swigluLimit, " must be > 0 (up is clamped to [-limit, limit])");
    if (!std::isfinite(c.swigluAlpha))
      fail("config: field swiglu_alpha = ", c.swigluAlpha, " must be finite");
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
        {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", c.ropeTheta}}},
        {"tie_word_embeddings", c.tieWordEmbeddings},
        {"max_position_embeddings", c.maxPositionEmbeddings},
        {"experts_implementation", c.expertsImplementation},
        {"attention_bias", true},
        {"swiglu_alpha", c.swigluAlpha},
        {"swiglu_limit", c.swigluLimit},
        {"layer_types", c.layerTypes},
        {"sliding_window", c.slidingWindow > 0 ? json(c.slidingWindow) : json(nullptr)},
    };
  }
};

}  // namespace

MOE_REGISTER(ModelFamily, GptOssFamily);

ModelConfig tinyGptOssTestConfig() {
  ModelConfig c = tinyTestConfig();
  c.modelType = "gpt_oss";
  c.intermediateSize = c.moeIntermediateSize;
  c.mlpOnlyLayers.clear();
  c.layerTypes = {kSlidingAttention, kFullAttention};
  c.slidingWindow = 3;
  c.swigluAlpha = 1.702;
  c.swigluLimit = 7.0;
  c.validate();
  return c;
}

}  // namespace moe::ref
