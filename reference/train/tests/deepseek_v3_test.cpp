// The deepseek_v3 family: its config (honoured / refused fields, the
// impossible combinations named by field and value), the group-limited
// router and the correction-bias balancing rule, each against values worked
// out by hand or by an independent computation here.
#include <gtest/gtest.h>

#include "common/error.h"
#include "reference/model/config.h"
#include "reference/model/deepseek_v3.h"
#include "reference/model/family.h"
#include "reference/model/init.h"
#include "reference/model/qwen3_moe.h"
#include "reference/train/trainer.h"

namespace moe::ref {
namespace {

using nlohmann::json;

// What transformers 5.25 writes for DeepseekV3Config(vocab_size=32,
// hidden_size=16, intermediate_size=24, moe_intermediate_size=8,
// num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
// n_routed_experts=8, kv_lora_rank=8, q_lora_rank=12, qk_rope_head_dim=4,
// v_head_dim=6, qk_nope_head_dim=4, n_group=4, topk_group=2,
// num_experts_per_tok=2, first_k_dense_replace=1).save_pretrained.
json hfWritten() {
  return json::parse(R"({
  "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 0, "dtype": "float32", "eos_token_id": 1, "first_k_dense_replace": 1,
  "head_dim": 4, "hidden_act": "silu", "hidden_size": 16, "initializer_range": 0.02,
  "intermediate_size": 24, "kv_lora_rank": 8, "max_position_embeddings": 4096,
  "model_type": "deepseek_v3", "moe_intermediate_size": 8, "n_group": 4, "n_routed_experts": 8,
  "n_shared_experts": 1, "norm_topk_prob": true, "num_attention_heads": 4,
  "num_experts_per_tok": 2, "num_hidden_layers": 2, "num_key_value_heads": 4,
  "num_nextn_predict_layers": 1, "output_router_logits": false, "pad_token_id": null,
  "pretraining_tp": 1, "q_lora_rank": 12, "qk_head_dim": 8, "qk_nope_head_dim": 4,
  "qk_rope_head_dim": 4, "rms_norm_eps": 1e-06, "rope_interleave": true,
  "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
  "routed_scaling_factor": 2.5, "tie_word_embeddings": false, "topk_group": 2,
  "transformers_version": "5.25.0", "use_cache": true, "v_head_dim": 6, "vocab_size": 32})");
}

json with(json j, const char* key, json value) {
  j[key] = std::move(value);
  return j;
}

void expectError(const json& j, std::initializer_list<const char*> needles) {
  try {
    ModelConfig::fromJson(j);
    ADD_FAILURE() << "no error for " << j.dump();
  } catch (const HarnessError& e) {
    for (const char* n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "message \"" << e.what() << "\" lacks \"" << n << "\"";
  }
}

TEST(DeepseekV3Config, ReadsWhatHuggingFaceWrites) {
  auto c = ModelConfig::fromJson(hfWritten());
  EXPECT_EQ(c.modelType, "deepseek_v3");
  EXPECT_EQ(c.qLoraRank, 12);
  EXPECT_EQ(c.kvLoraRank, 8);
  EXPECT_EQ(c.qkNopeHeadDim, 4);
  EXPECT_EQ(c.qkRopeHeadDim, 4);
  EXPECT_EQ(c.vHeadDim, 6);
  EXPECT_EQ(c.headDim, 4);
  EXPECT_TRUE(c.ropeInterleave);
  EXPECT_EQ(c.numExperts, 8);
  EXPECT_EQ(c.nSharedExperts, 1);
  EXPECT_EQ(c.nGroup, 4);
  EXPECT_EQ(c.topkGroup, 2);
  EXPECT_DOUBLE_EQ(c.routedScalingFactor, 2.5);
  EXPECT_DOUBLE_EQ(c.biasUpdateSpeed, 1e-3);  // absent: the harness's default
  EXPECT_FALSE(c.isMoeLayer(0));               // first_k_dense_replace = 1
  EXPECT_TRUE(c.isMoeLayer(1));
  EXPECT_EQ(ModelConfig::fromJson(c.toJson()).toJson(), c.toJson());
  auto tiny = tinyDeepseekV3TestConfig();
  EXPECT_EQ(ModelConfig::fromJson(tiny.toJson()).toJson(), tiny.toJson());
  // q_lora_rank null: q_proj.
  auto noLora = ModelConfig::fromJson(with(hfWritten(), "q_lora_rank", nullptr));
  EXPECT_EQ(noLora.qLoraRank, 0);
  bool hasQProj = false;
  for (const auto& s : parameterSpecs(noLora)) hasQProj |= s.name == "model.layers.0.self_attn.q_proj.weight";
  EXPECT_TRUE(hasQProj);
  EXPECT_EQ(ModelConfig::fromJson(noLora.toJson()).qLoraRank, 0);
  // first_k_dense_replace beyond the layers: every layer dense.
  EXPECT_EQ(ModelConfig::fromJson(with(hfWritten(), "first_k_dense_replace", 5)).numMoeLayers(), 0);
}

TEST(DeepseekV3Config, ImpossibleCombinationsNameFieldAndValue) {
  auto j = hfWritten();
  expectError(with(j, "topk_group", 5), {"topk_group = 5", "n_group = 4"});
  expectError(with(with(j, "n_group", 3), "topk_group", 1), {"n_routed_experts = 8", "n_group = 3", "divisible"});
  expectError(with(j, "num_experts_per_tok", 5), {"num_experts_per_tok = 5", "topk_group = 2", "(4)"});
  expectError(with(with(j, "n_group", 8), "topk_group", 2), {"n_group = 8", "at least 2"});
  expectError(with(j, "num_key_value_heads", 2), {"num_key_value_heads = 2", "num_attention_heads"});
  expectError(with(j, "head_dim", 8), {"head_dim = 8", "qk_rope_head_dim"});
  expectError(with(j, "qk_head_dim", 9), {"qk_head_dim = 9"});
  expectError(with(with(with(j, "qk_rope_head_dim", 3), "head_dim", 3), "qk_head_dim", 7),
              {"qk_rope_head_dim = 3", "even"});
  expectError(with(j, "n_group", nullptr), {"n_group = null"});
  expectError(with(j, "topk_group", nullptr), {"topk_group = null"});
  expectError(with(j, "first_k_dense_replace", -1), {"first_k_dense_replace", "-1"});
  expectError(with(j, "n_shared_experts", 0), {"n_shared_experts", "0"});
  expectError(with(j, "q_lora_rank", 0), {"q_lora_rank", "0"});
  expectError(with(j, "num_local_experts", 16), {"n_routed_experts (8)", "num_local_experts (16)"});
}

TEST(DeepseekV3Config, FieldsThatChangeTheMathsAreRefusedWithTheirValue) {
  auto j = hfWritten();
  expectError(with(j, "rope_scaling", json{{"rope_type", "yarn"}, {"factor", 40}}),
              {"rope_scaling", "yarn", "not implemented"});
  auto yarn = with(j, "rope_parameters", json{{"rope_type", "yarn"}, {"rope_theta", 10000.0}, {"factor", 40}});
  expectError(yarn, {"rope_parameters.", "not implemented"});  // the first key other than the default's
  expectError(with(j, "attention_bias", true), {"attention_bias = true", "q_a_proj"});
  expectError(with(j, "hidden_act", "gelu"), {"hidden_act = \"gelu\""});
  expectError(with(j, "attention_dropout", 0.1), {"attention_dropout = 0.1"});
  expectError(with(j, "router_aux_loss_coef", 0.01), {"router_aux_loss_coef = 0.01"});
  expectError(with(j, "bias_update_speed", -1), {"bias_update_speed", "-1"});
  expectError(with(j, "use_sliding_window", false), {"unknown field use_sliding_window", "deepseek_v3"});
  EXPECT_NO_THROW(ModelConfig::fromJson(with(j, "num_nextn_predict_layers", 3)));
  EXPECT_NO_THROW(ModelConfig::fromJson(with(j, "rope_interleave", false)));
}

TEST(DeepseekV3Router, GroupLimitedTopkKeepsTheBestGroups) {
  // 8 experts in 4 groups of 2; topk_group 2, top-2. Group sums: g0 = 0.9 +
  // 0.1, g1 = 0.5 + 0.45, g2 = 0.8 + 0.3, g3 = 0.2 + 0.2 -> groups 2, 0.
  // Expert 1 (0.1) is in a kept group, expert 2 (0.5) is not: the top-2 of
  // the kept experts {0, 1, 4, 5} is 0 (0.9), 4 (0.8).
  auto choice = torch::tensor({0.9, 0.1, 0.5, 0.45, 0.8, 0.3, 0.2, 0.2}).view({1, 8});
  auto idx = groupLimitedTopk(choice, /*nGroup=*/4, /*topkGroup=*/2, /*topK=*/2);
  EXPECT_EQ(idx[0][0].item<int64_t>(), 0);
  EXPECT_EQ(idx[0][1].item<int64_t>(), 4);
  // Groups scored by their TOP-2 sum, not their best: g1 (0.5 + 0.45 = 0.95)
  // beats g0 (0.6 + 0 = 0.6) although g0 holds the best expert.
  auto c2 = torch::tensor({0.6, 0.0, 0.5, 0.45, 0.1, 0.1, 0.1, 0.1}).view({1, 8});
  auto i2 = groupLimitedTopk(c2, 4, /*topkGroup=*/1, /*topK=*/2);
  EXPECT_EQ(i2[0][0].item<int64_t>(), 2);
  EXPECT_EQ(i2[0][1].item<int64_t>(), 3);
}

TEST(DeepseekV3Router, SelectsOnBiasedScoresWeighsWithUnbiasedOnes) {
  auto c = tinyDeepseekV3TestConfig();  // 8 experts, 4 groups, topk_group 2, top-2, scale 2.5
  c.nGroup = 1;
  c.topkGroup = 1;
  auto x = torch::eye(8, torch::kFloat).narrow(0, 0, 1).narrow(1, 0, 8);  // [1, 8] = e0
  // logits = W x = W[:, 0]; choose logits so sigmoid order is 7 > 6 > ... > 0.
  auto w = torch::zeros({8, 8});
  for (int e = 0; e < 8; ++e) w[e][0] = 0.1 * e;
  // The bias lifts experts 0 and 1 above the rest.
  auto bias = torch::zeros({8});
  bias[0] = 1.0;
  bias[1] = 0.9;
  auto r = biasCorrectedRoute(x, w, bias, c);
  EXPECT_EQ(r.routing.topkIdx[0][0].item<int64_t>(), 0);
  EXPECT_EQ(r.routing.topkIdx[0][1].item<int64_t>(), 1);
  const double s0 = 1.0 / (1.0 + std::exp(-0.0)), s1 = 1.0 / (1.0 + std::exp(-0.1));
  EXPECT_NEAR(r.routing.topkWeights[0][0].item<double>(), 2.5 * s0 / (s0 + s1 + 1e-20), 1e-6);
  EXPECT_NEAR(r.routing.topkWeights[0][1].item<double>(), 2.5 * s1 / (s0 + s1 + 1e-20), 1e-6);
  c.normTopkProb = false;
  auto r2 = biasCorrectedRoute(x, w, bias, c);
  EXPECT_NEAR(r2.routing.topkWeights[0][0].item<double>(), 2.5 * s0, 1e-6);
}

TEST(DeepseekV3BiasUpdate, FollowsTheFormula) {
  // loads 5, 1, 3, 3 (12 selections over 4 experts: mean 3):
  // bias += speed * sign(3 - load) = -s, +s, 0, 0.
  auto bias = torch::tensor({0.5f, -0.25f, 0.0f, 1.0f});
  auto load = torch::tensor({5.0f, 1.0f, 3.0f, 3.0f});
  applyBiasUpdate(bias, load, /*speed=*/0.125);
  EXPECT_FLOAT_EQ(bias[0].item<float>(), 0.375f);
  EXPECT_FLOAT_EQ(bias[1].item<float>(), -0.125f);
  EXPECT_FLOAT_EQ(bias[2].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(bias[3].item<float>(), 1.0f);
  EXPECT_TRUE(torch::equal(expertLoads(torch::tensor({{0, 2}, {0, 1}, {0, 2}}, torch::kLong), 4),
                           torch::tensor({3.0f, 1.0f, 2.0f, 0.0f})));
}

TEST(DeepseekV3BiasUpdate, TrainerAppliesItAfterTheStepAndNeverTrainsTheBias) {
  auto c = tinyDeepseekV3TestConfig();
  c.biasUpdateSpeed = 0.01;
  TrainOptions o;
  o.steps = 1;
  o.batchSize = 2;
  o.seqLen = 8;
  auto init = initParameters(c, /*seed=*/3);
  auto r = train(c, init, o);
  // The loads of step 1, recomputed with the initial parameters.
  auto out = forwardModel(c, init, trainBatch(c, o, 1));
  ASSERT_EQ(out.expertLoads.size(), 2u);
  size_t j = 0;
  for (int64_t i = 0; i < c.numHiddenLayers; ++i) {
    if (!c.isMoeLayer(i)) continue;
    const auto name = correctionBiasName(i);
    ASSERT_NE(r.gradsStep1.find(name), nullptr) << name;
    EXPECT_EQ(r.gradsStep1[name].abs().max().item<float>(), 0.0f) << name << " has a gradient";
    auto load = out.expertLoads[j++];
    EXPECT_EQ(load.sum().item<double>(), 2.0 * 8 * c.numExpertsPerTok);
    auto expected = init[name].clone();
    const double mean = load.sum().item<double>() / c.numExperts;
    for (int64_t e = 0; e < c.numExperts; ++e) {
      const double l = load[e].item<double>();
      const double sgn = l < mean ? 1.0 : (l > mean ? -1.0 : 0.0);
      expected[e] = expected[e].item<float>() + static_cast<float>(0.01 * sgn);
    }
    EXPECT_TRUE(torch::equal(r.finalParams[name], expected)) << name << ": " << r.finalParams[name]
                                                             << " vs " << expected;
  }
}

TEST(DeepseekV3Model, AuxIsZeroAndEveryParameterButTheBiasGetsAGradient) {
  auto c = tinyDeepseekV3TestConfig();
  TrainOptions o;
  o.steps = 1;
  o.batchSize = 2;
  o.seqLen = 8;
  auto r = train(c, o);
  EXPECT_EQ(r.steps[0].aux, 0.0);
  EXPECT_EQ(r.steps[0].loss, r.steps[0].ce);
  for (const auto& s : parameterSpecs(c)) {
    if (isCorrectionBias(s.name)) continue;
    ASSERT_NE(r.gradsStep1.find(s.name), nullptr) << s.name;
    EXPECT_GT(r.gradsStep1[s.name].abs().sum().item<double>(), 0.0) << s.name;
  }
}

}  // namespace
}  // namespace moe::ref
