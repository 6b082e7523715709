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

// gpt_oss (cases/plans/gpt_oss_ep.json, gpt_oss_tp.json): its router is
// mlp.router; its tp plan splits attention by head with biases and sinks
// and the interleaved experts with plain Shard(-1).
inline const char* kGptOssEpPlan = R"([
  ["model.layers.*.mlp.experts", "grouped_gemm"],
  ["model.layers.*.mlp.router", "ep_router"]])";

inline const char* kGptOssTpPlan = R"([
  ["model.layers.*.self_attn.q_proj", "gpt_oss_attn_colwise"],
  ["model.layers.*.self_attn.k_proj", "gpt_oss_attn_colwise"],
  ["model.layers.*.self_attn.v_proj", "gpt_oss_attn_colwise"],
  ["model.layers.*.self_attn.o_proj.weight", "gpt_oss_attn_rowwise"],
  ["model.layers.*.self_attn.o_proj.bias", "replicate"],
  ["model.layers.*.self_attn.sinks", "gpt_oss_sinks_by_head"],
  ["model.layers.*.mlp.experts.gate_up_proj", "gpt_oss_gate_up_colwise"],
  ["model.layers.*.mlp.experts.gate_up_proj_bias", "gpt_oss_gate_up_colwise"],
  ["model.layers.*.mlp.experts.down_proj", "gpt_oss_down_rowwise"],
  ["model.layers.*.mlp.experts.down_proj_bias", "replicate"],
  ["model.layers.*.mlp.experts", "moe_experts_allreduce"]])";

inline std::string joinPlans(std::vector<std::string> parts) {
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  for (const auto& p : parts)
    for (const auto& e : nlohmann::ordered_json::parse(p)) all.push_back(e);
  return all.dump();
}

}  // namespace moe::parallel::testing
