#include <gtest/gtest.h>

#include "common/error.h"
#include "reference/model/config.h"

namespace moe::ref {
namespace {

using nlohmann::json;

json tinyJson() { return tinyTestConfig().toJson(); }

json with(json j, const char* key, json value) {
  j[key] = std::move(value);
  return j;
}

// Expects fromJson(j) to throw a HarnessError whose message contains every needle.
void expectError(const json& j, std::initializer_list<const char*> needles) {
  try {
    ModelConfig::fromJson(j);
    ADD_FAILURE() << "no error for " << j.dump();
  } catch (const HarnessError& e) {
    for (const char* n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
        << "message \"" << e.what() << "\" lacks \"" << n << "\"";
  }
}

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
  expectError(with(hfWritten(), "model_type", "mixtral"), {"model_type", "mixtral", "not an implemented family"});
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

}  // namespace
}  // namespace moe::ref
