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
  json j = {{"vocab_size", 10}, {"hidden_size", 8}, {"num_hidden_layers", 6},
            {"num_attention_heads", 2}, {"intermediate_size", 4}, {"moe_intermediate_size", 4},
            {"num_experts", 4}, {"num_experts_per_tok", 1}, {"decoder_sparse_step", 2},
            {"mlp_only_layers", {3}}, {"unrelated_hf_field", "ignored"}};
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
  json noHeadDim = {{"vocab_size", 10}, {"hidden_size", 10}, {"num_hidden_layers", 1},
                    {"num_attention_heads", 3}, {"intermediate_size", 4}};
  expectError(noHeadDim, {"num_attention_heads", "head_dim"});
  expectError(json::array(), {"object"});
}

}  // namespace
}  // namespace moe::ref
