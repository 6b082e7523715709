#include "reference/model/config.h"

#include <algorithm>
#include <fstream>

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
  readInt(j, "num_experts_per_tok", c.numExpertsPerTok, /*required=*/false);
  readBool(j, "norm_topk_prob", c.normTopkProb);
  readIntList(j, "mlp_only_layers", c.mlpOnlyLayers);
  readInt(j, "decoder_sparse_step", c.decoderSparseStep, /*required=*/false);
  readInt(j, "shared_expert_intermediate_size", c.sharedExpertIntermediateSize,
          /*required=*/false);
  readDouble(j, "router_aux_loss_coef", c.routerAuxLossCoef);
  readDouble(j, "rms_norm_eps", c.rmsNormEps);
  readDouble(j, "rope_theta", c.ropeTheta);
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
      {"model_type", "qwen3_moe"},
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
