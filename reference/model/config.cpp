#include "reference/model/config.h"

#include <algorithm>
#include <fstream>
#include <set>

#include "common/error.h"

namespace moe::ref {
namespace {

using nlohmann::json;

// Field readers: the json type is checked here so that a wrong type names the
// field ("config: field hidden_size: expected an integer, got string").
const json* find(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

// Reads j[key] into out when present; `isType` is the json type test and
// `expected` its name in the error message.
template <typename T>
void readScalar(const json& j, const char* key, T& out, bool (json::*isType)() const noexcept,
                const char* expected, bool required = false) {
  const json* v = find(j, key);
  if (!v) {
    if (required) fail("config: missing required field ", key);
    return;
  }
  if (!(v->*isType)())
    fail("config: field ", key, ": expected ", expected, ", got ", v->type_name(), " (", v->dump(), ")");
  out = v->get<T>();
}

void readInt(const json& j, const char* key, int64_t& out, bool required) {
  readScalar(j, key, out, &json::is_number_integer, "an integer", required);
}
void readDouble(const json& j, const char* key, double& out) {
  readScalar(j, key, out, &json::is_number, "a number");
}
void readBool(const json& j, const char* key, bool& out) {
  readScalar(j, key, out, &json::is_boolean, "a boolean");
}
void readString(const json& j, const char* key, std::string& out) {
  readScalar(j, key, out, &json::is_string, "a string");
}

void readIntList(const json& j, const char* key, std::vector<int64_t>& out) {
  const json* v = find(j, key);
  if (!v) return;
  if (!v->is_array())
    fail("config: field ", key, ": expected a list of integers, got ", v->type_name());
  out.clear();
  for (const auto& e : *v) {
    if (!e.is_number_integer())
      fail("config: field ", key, ": expected a list of integers, element ", e.dump(), " is ",
           e.type_name());
    out.push_back(e.get<int64_t>());
  }
}

void requirePositive(int64_t v, const char* key) {
  if (v <= 0) fail("config: field ", key, " must be > 0, got ", v);
}

// The families the harness implements, and the Hugging Face model types it
// knows but does not implement (refused by name rather than read as Qwen).
const std::set<std::string> kImplementedFamilies = {"qwen3_moe"};

// qwen3_moe fields read into ModelConfig (Hugging Face names, transformers
// 5.x; num_local_experts is what Qwen3MoeConfig writes for num_experts,
// rope_parameters what it writes for rope_theta). experts_implementation and
// shared_expert_intermediate_size (Qwen2-MoE's shared expert) are the
// harness's own extensions.
const std::set<std::string> kHonoured = {
    "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
    "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
    "num_experts", "num_local_experts", "num_experts_per_tok", "norm_topk_prob",
    "mlp_only_layers", "decoder_sparse_step", "shared_expert_intermediate_size",
    "router_aux_loss_coef", "rms_norm_eps", "rope_theta", "rope_parameters",
    "tie_word_embeddings", "max_position_embeddings", "experts_implementation"};

// Fields that cannot change the loss, gradients or parameters of a training
// step, whatever their value: metadata, token ids (the harness feeds ids, it
// never generates), inference switches, the init scale (the harness inits
// with its own seeded rule or loads a checkpoint), and max_window_layers
// (only read when the sliding window is on, which is refused below).
// output_router_logits: the harness's loss always includes
// router_aux_loss_coef * aux (docs/families.md); set the coefficient to 0
// for a CE-only loss.
const std::set<std::string> kInert = {
    "model_type", "architectures", "torch_dtype", "dtype", "transformers_version",
    "_name_or_path", "bos_token_id", "eos_token_id", "pad_token_id", "use_cache",
    "initializer_range", "output_router_logits", "output_attentions",
    "output_hidden_states", "return_dict", "max_window_layers", "tokenizer_class",
    "_attn_implementation_autoset", "chunk_size_feed_forward", "is_encoder_decoder"};

// A field that changes the maths is accepted only at the value the model
// implements (`implemented`, compared as JSON); null counts as absent.
struct MathsField {
  const char* key;
  nlohmann::json implemented;
  const char* why;  // what another value would change
};
const std::vector<MathsField> kMathsFields = {
    {"attention_bias", false, "biases on q/k/v/o_proj"},
    {"attention_dropout", 0.0, "dropout on the attention weights during training"},
    {"hidden_act", "silu", "the MLP and expert activation"},
    {"use_sliding_window", false, "sliding-window attention"},
    {"rope_scaling", nullptr, "the rotary frequencies"},
};

[[noreturn]] void refuse(const std::string& key, const json& value, const std::string& why) {
  fail("config: field ", key, " = ", value.dump(), " is not implemented (", why,
       "); the harness refuses a config it would only half-read (docs/families.md)");
}

// Every field of `j` is honoured, inert, or at its implemented value.
void refuseUnimplemented(const json& j) {
  for (const auto& item : j.items()) {
    // Named copies, not structured bindings: a lambda below captures the key.
    const std::string key = item.key();
    const json& value = item.value();
    if (kHonoured.count(key) || kInert.count(key)) continue;
    const auto m = std::find_if(kMathsFields.begin(), kMathsFields.end(),
                                [&](const MathsField& f) { return key == f.key; });
    if (m != kMathsFields.end()) {
      if (value.is_null() || value == m->implemented) continue;
      // 0 and 0.0 are the same dropout.
      if (value.is_number() && m->implemented.is_number() &&
          value.get<double>() == m->implemented.get<double>())
        continue;
      refuse(key, value, m->why);
    }
    if (key == "sliding_window") {
      // Hugging Face drops sliding_window unless use_sliding_window (refused
      // above when true), so any value is inert here.
      continue;
    }
    fail("config: unknown field ", key, " = ", value.dump(),
         " (qwen3_moe: not honoured and not known to leave the computation unchanged; "
         "remove it, or see docs/families.md for the fields the harness reads)");
  }
}

// rope_parameters: {"rope_type": "default", "rope_theta": x} is honoured;
// any other rope type or key changes the rotary frequencies.
void readRopeParameters(const json& j, double& theta) {
  const json* v = find(j, "rope_parameters");
  if (!v) return;
  if (!v->is_object())
    fail("config: field rope_parameters: expected an object, got ", v->type_name(), " (", v->dump(), ")");
  for (const auto& [key, value] : v->items()) {
    if (key == "rope_type") {
      if (value != "default") refuse("rope_parameters.rope_type", value, "scaled rotary frequencies");
    } else if (key == "rope_theta") {
      if (!value.is_number())
        fail("config: field rope_parameters.rope_theta: expected a number, got ", value.type_name());
      const double t = value.get<double>();
      const json* top = find(j, "rope_theta");
      if (top && top->is_number() && top->get<double>() != t)
        fail("config: field rope_theta (", top->dump(), ") and rope_parameters.rope_theta (",
             value.dump(), ") disagree");
      theta = t;
    } else {
      refuse("rope_parameters." + key, value, "scaled rotary frequencies");
    }
  }
}

}  // namespace

bool ModelConfig::isMoeLayer(int64_t layer) const {
  if (numExperts <= 0) return false;
  if (std::find(mlpOnlyLayers.begin(), mlpOnlyLayers.end(), layer) != mlpOnlyLayers.end())
    return false;
  return (layer + 1) % decoderSparseStep == 0;
}

int64_t ModelConfig::numMoeLayers() const {
  int64_t n = 0;
  for (int64_t i = 0; i < numHiddenLayers; ++i) n += isMoeLayer(i) ? 1 : 0;
  return n;
}

void ModelConfig::validate() const {
  requirePositive(vocabSize, "vocab_size");
  requirePositive(hiddenSize, "hidden_size");
  requirePositive(numHiddenLayers, "num_hidden_layers");
  requirePositive(numAttentionHeads, "num_attention_heads");
  requirePositive(numKeyValueHeads, "num_key_value_heads");
  requirePositive(headDim, "head_dim");
  requirePositive(decoderSparseStep, "decoder_sparse_step");
  requirePositive(maxPositionEmbeddings, "max_position_embeddings");
  if (numExperts < 0) fail("config: field num_experts must be >= 0, got ", numExperts);
  if (numAttentionHeads % numKeyValueHeads != 0)
    fail("config: field num_key_value_heads (", numKeyValueHeads,
         ") must divide num_attention_heads (", numAttentionHeads, ")");
  if (sharedExpertIntermediateSize < 0)
    fail("config: field shared_expert_intermediate_size must be >= 0, got ",
         sharedExpertIntermediateSize);
  if (!(rmsNormEps > 0)) fail("config: field rms_norm_eps must be > 0, got ", rmsNormEps);
  if (!(ropeTheta > 0)) fail("config: field rope_theta must be > 0, got ", ropeTheta);
  if (routerAuxLossCoef < 0)
    fail("config: field router_aux_loss_coef must be >= 0, got ", routerAuxLossCoef);
  for (int64_t l : mlpOnlyLayers)
    if (l < 0 || l >= numHiddenLayers)
      fail("config: field mlp_only_layers: layer ", l, " is outside [0, ", numHiddenLayers, ")");
  if (expertsImplementation != "loop" && expertsImplementation != "grouped")
    fail("config: field experts_implementation must be \"loop\" or \"grouped\", got \"",
         expertsImplementation, "\"");
  bool anyDense = false;
  for (int64_t i = 0; i < numHiddenLayers; ++i) anyDense = anyDense || !isMoeLayer(i);
  if (anyDense) requirePositive(intermediateSize, "intermediate_size");
  if (numMoeLayers() > 0) {
    requirePositive(moeIntermediateSize, "moe_intermediate_size");
    requirePositive(numExpertsPerTok, "num_experts_per_tok");
    if (numExpertsPerTok > numExperts)
      fail("config: field num_experts_per_tok (", numExpertsPerTok, ") exceeds num_experts (",
           numExperts, ")");
  }
}

ModelConfig ModelConfig::fromJson(const json& j) {
  if (!j.is_object()) fail("config: expected a JSON object, got ", j.type_name());
  ModelConfig c;
  const json* type = find(j, "model_type");
  if (!type) fail("config: missing required field model_type (implemented families: qwen3_moe)");
  if (!type->is_string())
    fail("config: field model_type: expected a string, got ", type->type_name(), " (", type->dump(), ")");
  c.modelType = type->get<std::string>();
  if (!kImplementedFamilies.count(c.modelType))
    fail("config: model_type \"", c.modelType,
         "\" is not an implemented family (implemented: qwen3_moe); it is never read as another family");
  refuseUnimplemented(j);
  readInt(j, "vocab_size", c.vocabSize, /*required=*/true);
  readInt(j, "hidden_size", c.hiddenSize, /*required=*/true);
  readInt(j, "intermediate_size", c.intermediateSize, /*required=*/false);
  readInt(j, "moe_intermediate_size", c.moeIntermediateSize, /*required=*/false);
  readInt(j, "num_hidden_layers", c.numHiddenLayers, /*required=*/true);
  readInt(j, "num_attention_heads", c.numAttentionHeads, /*required=*/true);
  c.numKeyValueHeads = c.numAttentionHeads;  // HF default
  readInt(j, "num_key_value_heads", c.numKeyValueHeads, /*required=*/false);
  if (c.numAttentionHeads > 0 && c.hiddenSize % c.numAttentionHeads == 0)
    c.headDim = c.hiddenSize / c.numAttentionHeads;  // HF default
  readInt(j, "head_dim", c.headDim, /*required=*/false);
  if (c.headDim == 0 && !find(j, "head_dim"))
    fail("config: field num_attention_heads (", c.numAttentionHeads,
         ") does not divide hidden_size (", c.hiddenSize, ") and head_dim is not given");
  readInt(j, "num_experts", c.numExperts, /*required=*/false);
  if (const json* local = find(j, "num_local_experts")) {
    // Qwen3MoeConfig (transformers 5) writes num_experts as num_local_experts.
    int64_t n = 0;
    readInt(j, "num_local_experts", n, /*required=*/false);
    if (find(j, "num_experts") && n != c.numExperts)
      fail("config: field num_experts (", c.numExperts, ") and num_local_experts (", local->dump(),
           ") disagree");
    c.numExperts = n;
  }
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
  c.validate();
  return c;
}

ModelConfig ModelConfig::fromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("config ", path, ": cannot open");
  json j;
  try {
    in >> j;
  } catch (const json::exception& e) {
    fail("config ", path, ": invalid JSON: ", e.what());
  }
  try {
    return fromJson(j);
  } catch (const HarnessError& e) {
    throw e.withContext(path);
  }
}

json ModelConfig::toJson() const {
  return json{
      {"architectures", {"Qwen3MoeForCausalLM"}},
      {"model_type", modelType},
      {"vocab_size", vocabSize},
      {"hidden_size", hiddenSize},
      {"intermediate_size", intermediateSize},
      {"moe_intermediate_size", moeIntermediateSize},
      {"num_hidden_layers", numHiddenLayers},
      {"num_attention_heads", numAttentionHeads},
      {"num_key_value_heads", numKeyValueHeads},
      {"head_dim", headDim},
      {"num_experts", numExperts},
      {"num_experts_per_tok", numExpertsPerTok},
      {"norm_topk_prob", normTopkProb},
      {"mlp_only_layers", mlpOnlyLayers},
      {"decoder_sparse_step", decoderSparseStep},
      {"shared_expert_intermediate_size", sharedExpertIntermediateSize},
      {"router_aux_loss_coef", routerAuxLossCoef},
      {"rms_norm_eps", rmsNormEps},
      {"rope_theta", ropeTheta},
      {"tie_word_embeddings", tieWordEmbeddings},
      {"max_position_embeddings", maxPositionEmbeddings},
      {"experts_implementation", expertsImplementation},
  };
}

ModelConfig tinyTestConfig() {
  ModelConfig c;
  c.vocabSize = 32;
  c.hiddenSize = 16;
  c.intermediateSize = 24;
  c.moeIntermediateSize = 8;
  c.numHiddenLayers = 2;
  c.numAttentionHeads = 4;
  c.numKeyValueHeads = 2;
  c.headDim = 8;
  c.numExperts = 4;
  c.numExpertsPerTok = 2;
  c.normTopkProb = true;
  c.mlpOnlyLayers = {0};
  c.decoderSparseStep = 1;
  c.sharedExpertIntermediateSize = 0;
  c.routerAuxLossCoef = 0.01;
  c.rmsNormEps = 1e-6;
  c.ropeTheta = 10000.0;
  c.tieWordEmbeddings = false;
  c.maxPositionEmbeddings = 64;
  c.expertsImplementation = "grouped";
  c.validate();
  return c;
}

}  // namespace moe::ref
