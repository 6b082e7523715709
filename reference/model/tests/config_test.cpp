#include <gtest/gtest.h>

#include "common/error.h"
#include "reference/model/config.h"
#include "reference/model/tests/config_expect.h"
#include "reference/model/family.h"

namespace moe::ref {
namespace {

using nlohmann::json;

json tinyJson() { return tinyTestConfig().toJson(); }

using testutil::expectError;
using testutil::with;

TEST(ModelConfig, JsonRoundTrip) {
  auto c = tinyTestConfig();
  auto back = ModelConfig::fromJson(c.toJson());
  EXPECT_EQ(back.toJson(), c.toJson());
  EXPECT_EQ(back.toJson()["num_experts_per_tok"], 2);
}

TEST(ModelConfig, HfDefaultsAndMoeLayerRule) {
  json j = {{"model_type", "qwen3_moe"}, {"vocab_size", 10}, {"hidden_size", 8},
            {"num_hidden_layers", 6}, {"num_attention_heads", 2}, {"intermediate_size", 4},
            {"moe_intermediate_size", 4}, {"num_experts", 4}, {"num_experts_per_tok", 1},
            {"decoder_sparse_step", 2}, {"mlp_only_layers", {3}}, {"use_cache", true}};
  auto c = ModelConfig::fromJson(j);
  EXPECT_EQ(c.headDim, 4);
  EXPECT_EQ(c.numKeyValueHeads, 2);
  // (i+1) % 2 == 0 -> layers 1, 3, 5; 3 is mlp-only.
  std::vector<bool> moe;
  for (int i = 0; i < 6; ++i) moe.push_back(c.isMoeLayer(i));
  EXPECT_EQ(moe, (std::vector<bool>{false, true, false, false, false, true}));
  EXPECT_EQ(c.numMoeLayers(), 2);
  j["num_experts"] = 0;
  EXPECT_EQ(ModelConfig::fromJson(j).numMoeLayers(), 0);
}

TEST(ModelConfig, ValidationErrorsNameTheField) {
  auto j = tinyJson();
  expectError(with(j, "num_experts_per_tok", 5), {"num_experts_per_tok", "exceeds"});
  expectError(with(j, "num_key_value_heads", 3), {"num_key_value_heads", "divide"});
  expectError(with(j, "hidden_size", 0), {"hidden_size", "> 0"});
  expectError(with(j, "moe_intermediate_size", 0), {"moe_intermediate_size"});
  expectError(with(j, "hidden_size", "16"), {"hidden_size", "integer", "string"});
  expectError(with(j, "norm_topk_prob", 1), {"norm_topk_prob", "boolean"});
  expectError(with(j, "mlp_only_layers", {0, "x"}), {"mlp_only_layers"});
  expectError(with(j, "mlp_only_layers", {7}), {"mlp_only_layers", "7"});
  expectError(with(j, "experts_implementation", "fast"), {"experts_implementation"});
  expectError(with(j, "rms_norm_eps", -1.0), {"rms_norm_eps"});
  auto missing = j;
  missing.erase("vocab_size");
  expectError(missing, {"vocab_size", "missing"});
  json noHeadDim = {{"model_type", "qwen3_moe"}, {"vocab_size", 10}, {"hidden_size", 10}, {"num_hidden_layers", 1},
                    {"num_attention_heads", 3}, {"intermediate_size", 4}};
  expectError(noHeadDim, {"num_attention_heads", "head_dim"});
  expectError(json::array(), {"object"});
}

// What transformers 5.25's Qwen3MoeConfig(...).save_pretrained writes for the
// tiny config (copied from its config.json, not from our writer): experts as
// num_local_experts, the rotary base inside rope_parameters, and the fields
// that must be at their implemented value.
json hfWritten() {
  return json::parse(R"({
    "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": null, "decoder_sparse_step": 1, "dtype": "float32", "eos_token_id": null,
    "head_dim": 8, "hidden_act": "silu", "hidden_size": 16, "initializer_range": 0.02,
    "intermediate_size": 32, "max_position_embeddings": 32768, "mlp_only_layers": [],
    "model_type": "qwen3_moe", "moe_intermediate_size": 8, "norm_topk_prob": false,
    "num_attention_heads": 4, "num_experts_per_tok": 2, "num_hidden_layers": 2,
    "num_key_value_heads": 2, "num_local_experts": 4, "output_router_logits": false,
    "pad_token_id": null, "rms_norm_eps": 1e-06,
    "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
    "router_aux_loss_coef": 0.001, "sliding_window": null, "tie_word_embeddings": false,
    "transformers_version": "5.25.0", "use_cache": true, "use_sliding_window": false,
    "vocab_size": 32})");
}

TEST(ModelConfig, ReadsWhatHuggingFaceWrites) {
  const auto c = ModelConfig::fromJson(hfWritten());
  EXPECT_EQ(c.modelType, "qwen3_moe");
  EXPECT_EQ(c.numExperts, 4);  // a dense reading would give 0
  EXPECT_EQ(c.numMoeLayers(), 2);
  EXPECT_EQ(c.ropeTheta, 500000.0);
  // Inert: a sliding window Hugging Face itself drops (use_sliding_window false).
  EXPECT_NO_THROW(ModelConfig::fromJson(with(hfWritten(), "sliding_window", 4096)));
  EXPECT_NO_THROW(ModelConfig::fromJson(with(hfWritten(), "attention_dropout", 0)));
}

TEST(ModelConfig, FamilyIsRequiredAndNeverGuessed) {
  auto j = hfWritten();
  j.erase("model_type");
  expectError(j, {"model_type", "missing"});
  expectError(with(hfWritten(), "model_type", "qwen2_moe"),
              {"model_type", "qwen2_moe", "not an implemented family", "mixtral", "qwen3_moe"});
  expectError(with(hfWritten(), "model_type", 3), {"model_type", "string"});
}

TEST(ModelConfig, FieldsThatChangeTheMathsAreRefusedWithTheirValue) {
  expectError(with(hfWritten(), "attention_bias", true), {"attention_bias", "true", "not implemented"});
  expectError(with(hfWritten(), "hidden_act", "gelu"), {"hidden_act", "\"gelu\""});
  expectError(with(hfWritten(), "attention_dropout", 0.1), {"attention_dropout", "0.1"});
  expectError(with(hfWritten(), "use_sliding_window", true), {"use_sliding_window", "true"});
  expectError(with(hfWritten(), "rope_scaling", {{"type", "linear"}, {"factor", 2.0}}),
              {"rope_scaling", "linear"});
  expectError(with(hfWritten(), "rope_parameters", {{"rope_type", "yarn"}, {"rope_theta", 1e4}}),
              {"rope_parameters.rope_type", "yarn"});
  expectError(with(hfWritten(), "rope_parameters", {{"rope_type", "default"}, {"factor", 2.0}}),
              {"rope_parameters.factor", "2.0"});
  expectError(with(hfWritten(), "rope_theta", 10000.0), {"rope_theta", "rope_parameters.rope_theta", "disagree"});
  expectError(with(hfWritten(), "num_experts", 8), {"num_experts", "num_local_experts", "disagree"});
  expectError(with(hfWritten(), "some_new_field", 1), {"unknown field some_new_field", "1"});
}

// What transformers 5.25's MixtralConfig(...).save_pretrained writes for a
// tiny config (copied from its config.json, not from our writer).
json mixtralWritten() {
  return json::parse(R"({
    "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
    "dtype": "float32", "eos_token_id": 2, "head_dim": null, "hidden_act": "silu",
    "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 16,
    "max_position_embeddings": 64, "model_type": "mixtral", "num_attention_heads": 4,
    "num_experts_per_tok": 2, "num_hidden_layers": 2, "num_key_value_heads": 2,
    "num_local_experts": 8, "output_router_logits": false, "pad_token_id": null,
    "rms_norm_eps": 1e-05, "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
    "router_aux_loss_coef": 0.01, "router_jitter_noise": 0.0, "sliding_window": null,
    "tie_word_embeddings": false, "transformers_version": "5.25.0", "use_cache": true,
    "vocab_size": 64})");
}

TEST(MixtralConfig, ReadsWhatHuggingFaceWrites) {
  const auto c = ModelConfig::fromJson(mixtralWritten());
  EXPECT_EQ(c.modelType, "mixtral");
  EXPECT_EQ(c.numExperts, 8);
  EXPECT_EQ(c.numMoeLayers(), 2);  // every layer is MoE
  EXPECT_EQ(c.moeIntermediateSize, 16);  // the expert width is intermediate_size
  EXPECT_TRUE(c.normTopkProb);
  EXPECT_EQ(c.headDim, 8);  // hidden_size / num_attention_heads
  EXPECT_EQ(c.ropeTheta, 1e6);
  EXPECT_EQ(c.rmsNormEps, 1e-5);
  EXPECT_FALSE(familyOf(c).qkNorm());
  EXPECT_EQ(familyOf(c).hubExpertNaming().hubBlock, "block_sparse_moe");
  // Round trip in mixtral's own field names.
  const json back = c.toJson();
  EXPECT_EQ(back["architectures"][0], "MixtralForCausalLM");
  EXPECT_EQ(back["num_local_experts"], 8);
  EXPECT_FALSE(back.contains("moe_intermediate_size"));
  EXPECT_EQ(ModelConfig::fromJson(back).toJson(), back);
  EXPECT_EQ(ModelConfig::fromJson(tinyMixtralTestConfig().toJson()).toJson(),
            tinyMixtralTestConfig().toJson());
}

TEST(MixtralConfig, AbsentFieldsMeanMixtralConfigDefaults) {
  auto j = mixtralWritten();
  for (const char* k : {"rms_norm_eps", "rope_parameters", "num_experts_per_tok", "router_aux_loss_coef"})
    j.erase(k);
  const auto c = ModelConfig::fromJson(j);
  EXPECT_EQ(c.rmsNormEps, 1e-5);
  EXPECT_EQ(c.ropeTheta, 1e6);
  EXPECT_EQ(c.numExpertsPerTok, 2);
  EXPECT_EQ(c.routerAuxLossCoef, 0.001);
}

TEST(MixtralConfig, RefusalsNameTheFieldAndValue) {
  const auto j = mixtralWritten();
  expectError(with(j, "router_jitter_noise", 0.1), {"router_jitter_noise", "0.1", "not implemented"});
  expectError(with(j, "sliding_window", 4096), {"sliding_window", "4096", "sliding-window"});
  expectError(with(j, "hidden_act", "gelu"), {"hidden_act", "\"gelu\""});
  expectError(with(j, "attention_dropout", 0.1), {"attention_dropout", "0.1"});
  expectError(with(j, "rope_scaling", {{"type", "linear"}, {"factor", 2.0}}), {"rope_scaling", "linear"});
  expectError(with(j, "rope_parameters", {{"rope_type", "yarn"}, {"rope_theta", 1e6}}),
              {"rope_parameters.rope_type", "yarn"});
  // Qwen3-MoE's fields are unknown to mixtral: never half-read.
  expectError(with(j, "moe_intermediate_size", 8), {"unknown field moe_intermediate_size", "8", "mixtral"});
  expectError(with(j, "norm_topk_prob", false), {"unknown field norm_topk_prob", "mixtral"});
  expectError(with(j, "mlp_only_layers", {0}), {"unknown field mlp_only_layers"});
  expectError(with(j, "use_sliding_window", false), {"unknown field use_sliding_window"});
  expectError(with(j, "num_experts", 4), {"num_experts", "num_local_experts", "disagree"});
  expectError(with(j, "num_local_experts", 0), {"num_local_experts", "> 0"});
  expectError(with(j, "num_experts_per_tok", 9), {"num_experts_per_tok", "exceeds"});
  auto noVocab = j;
  noVocab.erase("vocab_size");
  expectError(noVocab, {"vocab_size", "missing"});
  // A Qwen3-MoE config relabelled mixtral is refused, not read as Mixtral.
  expectError(with(hfWritten(), "model_type", "mixtral"), {"unknown field", "mixtral"});
}

}  // namespace
}  // namespace moe::ref
