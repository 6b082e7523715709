// The gpt_oss family: its config reader (honoured / inert / refused, with
// field and value) and the pieces of its model that the Hugging Face oracle
// (harness/cli/tests/hf_oracle.py) cannot isolate: the interleaved clamped
// SwiGLU against a per-element formula.
#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"
#include "reference/model/config.h"
#include "reference/model/tests/config_expect.h"
#include "reference/model/family.h"
#include "reference/model/gpt_oss_model.h"
#include "reference/model/init.h"

namespace moe::ref {
namespace {

using nlohmann::json;

using testutil::expectError;
using testutil::with;

// What transformers 5.25's GptOssConfig(...).save_pretrained writes for a
// tiny config (copied from its config.json, not from our writer).
json gptOssWritten() {
  return json::parse(R"({
    "architectures": ["GptOssForCausalLM"], "attention_bias": true, "attention_dropout": 0.0,
    "bos_token_id": null, "dtype": "float32", "eos_token_id": null, "head_dim": 8,
    "hidden_act": "silu", "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 16,
    "layer_types": ["sliding_attention", "full_attention"], "max_position_embeddings": 64,
    "model_type": "gpt_oss", "num_attention_heads": 4, "num_experts_per_tok": 2,
    "num_hidden_layers": 2, "num_key_value_heads": 2, "num_local_experts": 8,
    "output_router_logits": false, "pad_token_id": null, "rms_norm_eps": 1e-05,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
    "router_aux_loss_coef": 0.01, "sliding_window": 4, "swiglu_alpha": 1.702,
    "swiglu_limit": 7.0, "tie_word_embeddings": false, "transformers_version": "5.25.0",
    "use_cache": true, "vocab_size": 64})");
}

TEST(GptOssConfig, ReadsWhatHuggingFaceWrites) {
  const auto c = ModelConfig::fromJson(gptOssWritten());
  EXPECT_EQ(c.modelType, "gpt_oss");
  EXPECT_EQ(c.numExperts, 8);
  EXPECT_EQ(c.numMoeLayers(), 2);  // every layer is MoE
  EXPECT_EQ(c.moeIntermediateSize, 16);
  EXPECT_TRUE(c.normTopkProb);  // softmax over the top-k logits
  EXPECT_EQ(c.slidingWindow, 4);
  EXPECT_EQ(c.layerTypes, (std::vector<std::string>{"sliding_attention", "full_attention"}));
  EXPECT_EQ(c.swigluLimit, 7.0);
  EXPECT_EQ(c.swigluAlpha, 1.702);
  EXPECT_EQ(c.ropeTheta, 1e4);
  EXPECT_TRUE(familyOf(c).gptOssLayers());
  EXPECT_TRUE(familyOf(c).hubExpertNaming().transposedFused);
  const json back = c.toJson();
  EXPECT_EQ(back["architectures"][0], "GptOssForCausalLM");
  EXPECT_EQ(ModelConfig::fromJson(back).toJson(), back);
  EXPECT_EQ(ModelConfig::fromJson(tinyGptOssTestConfig().toJson()).toJson(),
            tinyGptOssTestConfig().toJson());
  // hidden_act is written but never read by GptOssExperts: inert.
  EXPECT_NO_THROW(ModelConfig::fromJson(with(gptOssWritten(), "hidden_act", "gelu")));
}

TEST(GptOssConfig, AbsentFieldsMeanGptOssConfigDefaults) {
  auto j = gptOssWritten();
  for (const char* k : {"layer_types", "sliding_window", "swiglu_alpha", "swiglu_limit", "head_dim",
                        "rms_norm_eps", "num_experts_per_tok"})
    j.erase(k);
  j["num_hidden_layers"] = 3;
  const auto c = ModelConfig::fromJson(j);
  EXPECT_EQ(c.layerTypes,
            (std::vector<std::string>{"sliding_attention", "full_attention", "sliding_attention"}));
  EXPECT_EQ(c.slidingWindow, 128);
  EXPECT_EQ(c.swigluAlpha, 1.702);
  EXPECT_EQ(c.swigluLimit, 7.0);
  EXPECT_EQ(c.headDim, 64);  // GptOssConfig's default, not hidden / heads
  EXPECT_EQ(c.rmsNormEps, 1e-5);
  EXPECT_EQ(c.numExpertsPerTok, 4);
  // head_dim null: hidden_size / num_attention_heads.
  EXPECT_EQ(ModelConfig::fromJson(with(gptOssWritten(), "head_dim", nullptr)).headDim, 8);
  // Absent rope_parameters is yarn in GptOssConfig: refused, not defaulted.
  auto noRope = gptOssWritten();
  noRope.erase("rope_parameters");
  expectError(noRope, {"rope_parameters", "yarn", "not implemented"});
}

TEST(GptOssConfig, RefusalsNameTheFieldAndValue) {
  const auto j = gptOssWritten();
  expectError(with(j, "attention_bias", false), {"attention_bias", "false", "not implemented"});
  expectError(with(j, "attention_dropout", 0.1), {"attention_dropout", "0.1"});
  expectError(with(j, "rope_parameters", {{"rope_type", "yarn"}, {"rope_theta", 150000.0}}),
              {"rope_parameters.rope_type", "yarn"});
  // GptOssConfig's yarn keys (the first, in key order, is named).
  expectError(with(j, "rope_parameters",
                   {{"rope_type", "yarn"}, {"rope_theta", 150000.0}, {"factor", 32.0}}),
              {"rope_parameters.factor", "32.0", "not implemented"});
  expectError(with(j, "rope_scaling", {{"rope_type", "yarn"}, {"factor", 32.0}}), {"rope_scaling", "yarn"});
  expectError(with(j, "layer_types", {"sliding_attention", "chunked_attention"}),
              {"layer_types[1]", "chunked_attention"});
  expectError(with(j, "layer_types", {"full_attention"}), {"layer_types", "1 entries", "num_hidden_layers"});
  expectError(with(j, "layer_types", "full_attention"), {"layer_types", "list"});
  expectError(with(j, "sliding_window", nullptr), {"sliding_window", "0", "sliding_attention"});
  expectError(with(j, "sliding_window", 0), {"sliding_window", "0"});
  expectError(with(j, "swiglu_limit", 0.0), {"swiglu_limit", "0", "> 0"});
  expectError(with(j, "swiglu_limit", "7"), {"swiglu_limit", "number"});
  expectError(with(j, "num_local_experts", 0), {"num_local_experts", "> 0"});
  expectError(with(j, "num_experts_per_tok", 9), {"num_experts_per_tok", "exceeds"});
  expectError(with(j, "some_new_field", 1), {"unknown field some_new_field", "1", "gpt_oss"});
  // Other families' fields are unknown here: never half-read.
  expectError(with(j, "moe_intermediate_size", 8), {"unknown field moe_intermediate_size", "gpt_oss"});
  expectError(with(j, "router_jitter_noise", 0.0), {"unknown field router_jitter_noise"});
  expectError(with(j, "use_sliding_window", true), {"unknown field use_sliding_window"});
  // Full attention everywhere needs no window.
  auto full = with(j, "layer_types", {"full_attention", "full_attention"});
  EXPECT_EQ(ModelConfig::fromJson(with(full, "sliding_window", nullptr)).slidingWindow, 0);
}

// Per element, independently of clampedSwiglu's slicing: column 2j is gate
// j, column 2j + 1 up j.
TEST(GptOssModel, ClampedSwigluReadsInterleavedPairs) {
  const double alpha = 1.702, limit = 0.5;
  auto gateUp = torch::linspace(-1.2, 1.1, 12, torch::kDouble).view({2, 6});
  auto got = clampedSwiglu(gateUp, alpha, limit);
  ASSERT_EQ(got.sizes(), (std::vector<int64_t>{2, 3}));
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t j = 0; j < 3; ++j) {
      const double g = std::min(gateUp[r][2 * j].item<double>(), limit);
      const double u = std::max(-limit, std::min(gateUp[r][2 * j + 1].item<double>(), limit));
      const double want = (u + 1) * g / (1 + std::exp(-alpha * g));
      EXPECT_NEAR(got[r][j].item<double>(), want, 1e-15) << r << "," << j;
    }
}

// The grouped experts (a permuted, grouped matmul) and the per-expert loop
// agree, biases and clamp included, so either experts_implementation
// computes the model the oracle checks.
TEST(GptOssModel, GroupedEqualsLoop) {
  ModelConfig c = tinyGptOssTestConfig();
  c.swigluLimit = 0.05;  // clamps part of the values at this init
  auto params = initParameters(c, /*seed=*/3);
  auto ids = torch::arange(24, torch::kLong).remainder(c.vocabSize).view({2, 12});
  auto grouped = gptOssForwardModel(c, params, ids, {torch::kDouble});
  c.expertsImplementation = "loop";
  auto loop = gptOssForwardModel(c, params, ids, {torch::kDouble});
  EXPECT_LT((grouped.logits - loop.logits).abs().max().item<double>(), 1e-12);
}

}  // namespace
}  // namespace moe::ref
