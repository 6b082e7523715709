#include "reference/model/config_fields.h"

#include <algorithm>

#include "common/error.h"

namespace moe::ref::fields {
namespace {

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

}  // namespace

const json* find(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
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

void refuse(const std::string& key, const json& value, const std::string& why) {
  fail("config: field ", key, " = ", value.dump(), " is not implemented (", why,
       "); the harness refuses a config it would only half-read (docs/families.md)");
}

void refuseUnimplemented(const json& j, const FieldTable& table) {
  for (const auto& item : j.items()) {
    // Named copies, not structured bindings: a lambda below captures the key.
    const std::string key = item.key();
    const json& value = item.value();
    if (table.honoured.count(key) || table.inert.count(key)) continue;
    const auto m = std::find_if(table.maths.begin(), table.maths.end(),
                                [&](const MathsField& f) { return key == f.key; });
    if (m != table.maths.end()) {
      if (value.is_null() || value == m->implemented) continue;
      // 0 and 0.0 are the same dropout.
      if (value.is_number() && m->implemented.is_number() &&
          value.get<double>() == m->implemented.get<double>())
        continue;
      refuse(key, value, m->why);
    }
    fail("config: unknown field ", key, " = ", value.dump(), " (", table.family,
         ": not honoured and not known to leave the computation unchanged; "
         "remove it, or see docs/families.md for the fields the harness reads)");
  }
}

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

void readNumExperts(const json& j, int64_t& numExperts) {
  readInt(j, "num_experts", numExperts, /*required=*/false);
  if (const json* local = find(j, "num_local_experts")) {
    int64_t n = 0;
    readInt(j, "num_local_experts", n, /*required=*/false);
    if (find(j, "num_experts") && n != numExperts)
      fail("config: field num_experts (", numExperts, ") and num_local_experts (", local->dump(),
           ") disagree");
    numExperts = n;
  }
}

void readAttentionShape(const json& j, int64_t hiddenSize, int64_t defaultKvHeads,
                        int64_t& numHeads, int64_t& numKvHeads, int64_t& headDim) {
  readInt(j, "num_attention_heads", numHeads, /*required=*/true);
  numKvHeads = defaultKvHeads > 0 ? defaultKvHeads : numHeads;
  readInt(j, "num_key_value_heads", numKvHeads, /*required=*/false);
  if (numHeads > 0 && hiddenSize % numHeads == 0) headDim = hiddenSize / numHeads;  // HF default
  readInt(j, "head_dim", headDim, /*required=*/false);
  if (headDim == 0 && !find(j, "head_dim"))
    fail("config: field num_attention_heads (", numHeads, ") does not divide hidden_size (",
         hiddenSize, ") and head_dim is not given");
}

const std::set<std::string>& commonInertFields() {
  static const std::set<std::string> kInert = {
      "model_type", "architectures", "torch_dtype", "dtype", "transformers_version",
      "_name_or_path", "bos_token_id", "eos_token_id", "pad_token_id", "use_cache",
      "initializer_range", "output_router_logits", "output_attentions",
      "output_hidden_states", "return_dict", "tokenizer_class",
      "_attn_implementation_autoset", "chunk_size_feed_forward", "is_encoder_decoder"};
  return kInert;
}

void setEveryLayerMoe(ModelConfig& c, int64_t expertWidth) {
  c.intermediateSize = expertWidth;
  c.moeIntermediateSize = expertWidth;
  c.normTopkProb = true;
  c.mlpOnlyLayers.clear();
  c.decoderSparseStep = 1;
  c.sharedExpertIntermediateSize = 0;
}

void validateEveryLayerMoe(const ModelConfig& c, const std::string& family, const std::string& normReason) {
  if (c.numExperts <= 0)
    fail("config: field num_local_experts must be > 0 (", family, ": every layer is MoE), got ", c.numExperts);
  if (c.moeIntermediateSize != c.intermediateSize)
    fail("config: ", family, ": the expert width is intermediate_size (", c.intermediateSize,
         "); moe_intermediate_size (", c.moeIntermediateSize, ") must equal it");
  if (!c.normTopkProb) fail("config: ", family, ": norm_topk_prob must be true (", normReason, ")");
  if (!c.mlpOnlyLayers.empty() || c.decoderSparseStep != 1)
    fail("config: ", family, ": every layer is MoE (mlp_only_layers must be empty and decoder_sparse_step 1, got ",
         c.mlpOnlyLayers.size(), " mlp-only layers and step ", c.decoderSparseStep, ")");
  if (c.sharedExpertIntermediateSize != 0)
    fail("config: ", family, ": field shared_expert_intermediate_size must be 0 (no shared expert), got ",
         c.sharedExpertIntermediateSize);
}

}  // namespace moe::ref::fields
