#pragma once
// The plans the distributed tests use (JSON arrays of [pattern, style], so
// one module can take a style per mesh dim).
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace moe::parallel::testing {

inline const char* kEpPlan = R"([
  ["model.layers.*.mlp.experts", "grouped_gemm"],
  ["model.layers.*.mlp.gate", "ep_router"]])";

inline const char* kTpPlan = R"([
  ["model.layers.*.self_attn.q_proj", "colwise"],
  ["model.layers.*.self_attn.k_proj", "colwise"],
  ["model.layers.*.self_attn.v_proj", "colwise"],
  ["model.layers.*.self_attn.o_proj", "rowwise"],
  ["model.layers.*.mlp.gate_proj", "colwise"],
  ["model.layers.*.mlp.up_proj", "colwise"],
  ["model.layers.*.mlp.down_proj", "rowwise"],
  ["model.layers.*.mlp.experts.gate_up_proj", "moe_tp_gate_up_colwise"],
  ["model.layers.*.mlp.experts.down_proj", "moe_tp_down_rowwise"],
  ["model.layers.*.mlp.experts", "moe_experts_allreduce"]])";

// Mixtral (every layer MoE, no dense MLP): kTpPlan without the dense MLP
// rules, which would match nothing (an error).
inline const char* kMixtralTpPlan = R"([
  ["model.layers.*.self_attn.q_proj", "colwise"],
  ["model.layers.*.self_attn.k_proj", "colwise"],
  ["model.layers.*.self_attn.v_proj", "colwise"],
  ["model.layers.*.self_attn.o_proj", "rowwise"],
  ["model.layers.*.mlp.experts.gate_up_proj", "moe_tp_gate_up_colwise"],
  ["model.layers.*.mlp.experts.down_proj", "moe_tp_down_rowwise"],
  ["model.layers.*.mlp.experts", "moe_experts_allreduce"]])";

inline const char* kSpEntries = R"([
  ["model.layers.*.input_layernorm", "sequence_parallel"],
  ["model.layers.*.post_attention_layernorm", "sequence_parallel"],
  ["model.norm", "sequence_parallel"]])";

inline std::string joinPlans(std::vector<std::string> parts) {
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  for (const auto& p : parts)
    for (const auto& e : nlohmann::ordered_json::parse(p)) all.push_back(e);
  return all.dump();
}

}  // namespace moe::parallel::testing
