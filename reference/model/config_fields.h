#pragma once
// The shared pieces of the family config readers (family_*.cpp): typed
// field readers whose errors name the field, and the honoured / inert /
// refused table every family declares.
//
// Contract: every reader throws moe::HarnessError naming the field
// ("config: field hidden_size: expected an integer, got string ("16")");
// a null value counts as absent.
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "reference/model/config.h"

namespace moe::ref::fields {

using nlohmann::json;

// j[key], or nullptr when absent or null.
const json* find(const json& j, const char* key);

void readInt(const json& j, const char* key, int64_t& out, bool required);
void readDouble(const json& j, const char* key, double& out);
void readBool(const json& j, const char* key, bool& out);
void readString(const json& j, const char* key, std::string& out);
void readIntList(const json& j, const char* key, std::vector<int64_t>& out);

// A field that changes the maths is accepted only at the value the model
// implements (`implemented`, compared as JSON; numbers by value, so 0 and
// 0.0 agree); null counts as absent.
struct MathsField {
  const char* key;
  json implemented;
  const char* why;  // what another value would change
};

// A family's fields: each is honoured (read by the family's reader), inert
// (cannot change a training step whatever its value), or a maths field;
// anything else is unknown and refused.
struct FieldTable {
  std::string family;  // model_type, for the messages
  std::set<std::string> honoured;
  std::set<std::string> inert;
  std::vector<MathsField> maths;
};

// Every field of `j` is honoured, inert, or a maths field at its
// implemented value; otherwise a HarnessError names the field and value.
void refuseUnimplemented(const json& j, const FieldTable& table);

// "config: field <key> = <value> is not implemented (<why>); ..."
[[noreturn]] void refuse(const std::string& key, const json& value, const std::string& why);

// rope_parameters: {"rope_type": "default", "rope_theta": x} is honoured
// (theta = x; a top-level rope_theta must agree); any other rope type or
// key is refused.
void readRopeParameters(const json& j, double& theta);

// num_experts or num_local_experts (transformers 5 writes the latter; both
// present must agree) into `numExperts`, left unchanged when neither is.
void readNumExperts(const json& j, int64_t& numExperts);

// num_attention_heads / num_key_value_heads / head_dim with Hugging Face's
// default head_dim = hidden_size / num_attention_heads (kv heads default to
// `defaultKvHeads`, or to the attention heads when it is 0).
void readAttentionShape(const json& j, int64_t hiddenSize, int64_t defaultKvHeads,
                        int64_t& numHeads, int64_t& numKvHeads, int64_t& headDim);

// The inert fields every family shares: metadata, token ids (the harness
// feeds ids, it never generates), inference switches, and the init scale
// (the harness inits with its own seeded rule or loads a checkpoint).
// output_router_logits: the harness's loss always includes
// router_aux_loss_coef * aux (docs/families.md).
const std::set<std::string>& commonInertFields();

// Families whose every layer is MoE with experts of width intermediate_size
// and a top-k-renormalised router (mixtral, gpt_oss), in the shared model's
// form: sets the fields that say so ...
void setEveryLayerMoe(ModelConfig& c, int64_t expertWidth);
// ... and refuses a ModelConfig that says otherwise, naming `family`;
// `normReason` says why norm_topk_prob must be true for it.
void validateEveryLayerMoe(const ModelConfig& c, const std::string& family, const std::string& normReason);

}  // namespace moe::ref::fields
