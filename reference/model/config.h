#pragma once
// ModelConfig: the Qwen3-MoE model configuration, read from and written to
// JSON with Hugging Face field names (config.json of a Qwen3-MoE checkpoint),
// plus our `experts_implementation` ("loop" | "grouped").
//
// Contract: fromJson() rejects wrong field types, missing required sizes and
// inconsistent values with a moe::HarnessError that names the field; a
// ModelConfig returned by fromJson() or tinyTestConfig() has passed validate().
//
// Honoured or refused, never half-read: `model_type` selects the family
// (required; only "qwen3_moe" is implemented, other families are refused by
// name). Every other field is one of
//  - honoured: read into this struct and used by the model;
//  - inert: accepted and ignored because it cannot change the computation
//    (architectures, dtype, token ids, transformers_version, use_cache, ...),
//    or because it is at the value the model implements (attention_bias
//    false, hidden_act "silu", sliding window off, no rope scaling);
//  - refused: an error naming the field and its value (a field that would
//    change the maths at a value we do not implement, or a field we do not
//    know: an unknown field could change the maths).
// The tables live in config.cpp; docs/families.md lists them.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moe::ref {

// gpt_oss layer_types values (Hugging Face's names).
inline constexpr const char* kSlidingAttention = "sliding_attention";
inline constexpr const char* kFullAttention = "full_attention";

struct ModelConfig {
  std::string modelType = "qwen3_moe";  // HF model_type: the family
  int64_t vocabSize = 0;
  int64_t hiddenSize = 0;
  int64_t intermediateSize = 0;     // dense SwiGLU MLP width
  int64_t moeIntermediateSize = 0;  // per-expert SwiGLU width
  int64_t numHiddenLayers = 0;
  int64_t numAttentionHeads = 0;
  int64_t numKeyValueHeads = 0;
  int64_t headDim = 0;  // HF default: hidden_size / num_attention_heads
  int64_t numExperts = 0;
  int64_t numExpertsPerTok = 0;  // top-k
  bool normTopkProb = false;
  std::vector<int64_t> mlpOnlyLayers;
  int64_t decoderSparseStep = 1;
  int64_t sharedExpertIntermediateSize = 0;  // 0 = no shared expert
  double routerAuxLossCoef = 0.001;
  double rmsNormEps = 1e-6;
  double ropeTheta = 10000.0;
  bool tieWordEmbeddings = false;
  int64_t maxPositionEmbeddings = 2048;
  std::string expertsImplementation = "grouped";  // "loop" | "grouped"

  // --- gpt_oss (GptOssConfig; unused by the other families) ---
  // The experts' clamped SwiGLU: gate clamped above at swigluLimit, up to
  // [-swigluLimit, swigluLimit], out = (up + 1) * gate * sigmoid(swigluAlpha * gate).
  double swigluAlpha = 1.702;
  double swigluLimit = 7.0;
  // Per layer "sliding_attention" or "full_attention"; a sliding layer's
  // query at position t attends to keys at t - slidingWindow < s <= t.
  std::vector<std::string> layerTypes;
  int64_t slidingWindow = 0;  // 0: no layer slides
  // --- deepseek_v3 (family_deepseek_v3.cpp, deepseek_v3.h); other families
  // leave these at their defaults ---
  int64_t qLoraRank = 0;       // 0: q_proj (HF q_lora_rank null); > 0: q_a_proj, q_a_layernorm, q_b_proj
  int64_t kvLoraRank = 0;      // > 0: multi-head latent attention (kv_a_proj_with_mqa, kv_b_proj)
  int64_t qkNopeHeadDim = 0;   // per-head q/k dims without rotary
  int64_t qkRopeHeadDim = 0;   // per-head q/k rotary dims (the shared k_rot too)
  int64_t vHeadDim = 0;        // per-head value dims
  bool ropeInterleave = false; // rotary pairs (x0, x1), (x2, x3), ... instead of rotate-half
  int64_t nSharedExperts = 0;  // ungated mlp.shared_experts of width moe_intermediate_size * n
  int64_t nGroup = 1;          // expert groups of the group-limited top-k
  int64_t topkGroup = 1;       // groups a token may route to
  double routedScalingFactor = 1.0;  // multiplies the routed experts' weights
  // The harness's training rule for mlp.gate.e_score_correction_bias (HF's
  // model does not update it): after each optimizer step,
  // bias += speed * sign(mean load - load), loads over the global batch.
  double biasUpdateSpeed = 0.0;

  // HF rule: layer i is MoE iff i is not in mlp_only_layers, num_experts > 0
  // and (i + 1) % decoder_sparse_step == 0.
  bool isMoeLayer(int64_t layer) const;
  int64_t numMoeLayers() const;

  // Throws moe::HarnessError naming the first offending field.
  void validate() const;

  static ModelConfig fromJson(const nlohmann::json& j);
  static ModelConfig fromFile(const std::string& path);
  nlohmann::json toJson() const;
};

// A model small enough for finite differences and sub-second tests:
// 2 layers (layer 0 dense via mlp_only_layers, layer 1 MoE), 4 experts, top-2,
// GQA 4 heads / 2 kv heads, head_dim 8, vocab 32.
ModelConfig tinyTestConfig();

}  // namespace moe::ref
