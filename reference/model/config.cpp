#include "reference/model/config.h"

#include <algorithm>
#include <fstream>

#include "common/error.h"
#include "common/registry.h"
#include "reference/model/family.h"

// The field tables and readers of each family are in family_<model_type>.cpp
// (shared pieces: config_fields.h); this file holds what every family shares.
namespace moe::ref {
namespace {

using nlohmann::json;

void requirePositive(int64_t v, const char* key) {
  if (v <= 0) fail("config: field ", key, " must be > 0, got ", v);
}

}  // namespace

const ModelFamily& ModelFamily::get(const std::string& modelType) {
  const ModelFamily* f = Registry<ModelFamily>::instance().find(modelType);
  if (!f)
    fail("config: model_type \"", modelType, "\" is not an implemented family (implemented: ",
         implementedNames(), "); it is never read as another family");
  return *f;
}

std::string ModelFamily::implementedNames() {
  return Registry<ModelFamily>::instance().joinedNames();
}

const ModelFamily& familyOf(const ModelConfig& config) { return ModelFamily::get(config.modelType); }

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
  const ModelFamily& fam = familyOf(*this);
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
  fam.validate(*this);
}

ModelConfig ModelConfig::fromJson(const json& j) {
  if (!j.is_object()) fail("config: expected a JSON object, got ", j.type_name());
  ModelConfig c;
  auto type = j.find("model_type");
  if (type == j.end() || type->is_null())
    fail("config: missing required field model_type (implemented families: ",
         ModelFamily::implementedNames(), ")");
  if (!type->is_string())
    fail("config: field model_type: expected a string, got ", type->type_name(), " (", type->dump(), ")");
  c.modelType = type->get<std::string>();
  ModelFamily::get(c.modelType).readConfig(j, c);
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

json ModelConfig::toJson() const { return familyOf(*this).toJson(*this); }

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

ModelConfig tinyMixtralTestConfig() {
  ModelConfig c = tinyTestConfig();
  c.modelType = "mixtral";
  c.intermediateSize = c.moeIntermediateSize;
  c.mlpOnlyLayers.clear();
  c.validate();
  return c;
}

}  // namespace moe::ref
