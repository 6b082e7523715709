#include "reference/parallel/layer_plan.h"

#include "common/error.h"
#include "reference/model/family.h"
#include "reference/model/params.h"

namespace moe::parallel {

using plan::ModuleComm;

namespace {

class Reader {
 public:
  Reader(const plan::AppliedPlan& plan, const mesh::MeshShape& mesh, const ref::ModelConfig& config)
      : plan(plan), mesh(mesh), config(config) {}


  bool declaresOn(const std::string& dim, bool (*pred)(const ModuleComm&)) const {
    for (const auto& d : plan.dimsDeclaring(pred))
      if (d == dim) return true;
    return false;
  }

  // Some parameter of `module` is sharded on `dim` (of size > 1).
  bool moduleShardedOn(const std::string& module, const std::string& dim) const {
    const int i = mesh.index(dim);
    if (i < 0 || mesh.dims()[i].size <= 1) return false;
    for (const auto* pp : plan.paramsOf(module))
      if (pp->placements[i].isSharded()) return true;
    return false;
  }
  // Every parameter of `module` agrees on being sharded on `dim` (but the
  // one named `exceptName`, if any).
  bool moduleUniformOn(const std::string& module, const std::string& dim,
                       const std::string& exceptName = "") const {
    const int i = mesh.index(dim);
    if (i < 0 || mesh.dims()[i].size <= 1) return true;
    int sharded = 0, n = 0;
    for (const auto* pp : plan.paramsOf(module)) {
      if (pp->name == exceptName) continue;
      ++n;
      sharded += pp->placements[i].isSharded() ? 1 : 0;
    }
    return sharded == 0 || sharded == n;
  }

  std::string stylesOf(const std::string& module) const {
    auto it = plan.moduleStyles.find(module);
    const std::string s = it == plan.moduleStyles.end() ? "" : it->second;
    return s.empty() ? "no style" : "style " + s;
  }

  // Whether `r` runs tensor-parallel; throws HarnessError for declarations
  // that do not match its placements.
  bool regionIsTp(const Region& r) const {
    std::vector<std::string> modules = r.entries;
    modules.push_back(r.exit);
    const bool tpOn = moduleShardedOn(modules.front(), "tp");
    // gpt_oss: the row-parallel o_proj.bias stays whole under tp (it is
    // added once, after the reduction: styles/gpt_oss_attn_rowwise.cpp).
    const std::string wholeBias = ref::familyOf(config).gptOssLayers() ? r.exit + ".bias" : "";
    for (const auto& m : modules)
      if (moduleShardedOn(m, "tp") != tpOn || !moduleUniformOn(m, "tp", m == r.exit ? wholeBias : ""))
        fail("plan: ", r.scope, ": the modules of one tensor-parallel region (", moe::str(modules.size()),
             " modules from ", modules.front(), " to ", r.exit, ") must be sharded over tp together; ", m,
             " (", stylesOf(m), ") is ", moduleShardedOn(m, "tp") ? "" : "not ", "sharded");
    if (!tpOn) return false;
    for (const auto& m : r.entries)
      if (!plan.comm(m, "tp").enterRegion)
        fail("plan: ", m, " (", stylesOf(m), ") is sharded over tp but its style declares no enter_region: ",
             "its input would not be replicated on tp and its input gradient never summed");
    if (!plan.comm(r.exit, "tp").exitRegion)
      fail("plan: ", r.exit, " (", stylesOf(r.exit), ") is sharded over tp but its style declares no ",
           "exit_region: its Partial output would never be summed");
    return true;
  }

  std::vector<LayerPlan> planLayers() const {
    // Region declarations only make sense on tp, token routing only on ep.
    auto onlyOn = [&](const char* what, bool (*pred)(const ModuleComm&), const std::string& dim) {
      for (const auto& d : plan.dimsDeclaring(pred))
        if (d != dim)
          fail("plan: a style declares ", what, " on mesh dim '", d, "'; the distributed model runs it on '", dim,
               "' only");
    };
    onlyOn("enter_region", [](const ModuleComm& c) { return c.enterRegion; }, "tp");
    onlyOn("exit_region", [](const ModuleComm& c) { return c.exitRegion; }, "tp");
    onlyOn("sequence_parallel", [](const ModuleComm& c) { return c.sequenceParallel; }, "tp");
    onlyOn("sum_expert_outputs", [](const ModuleComm& c) { return c.sumExpertOutputs; }, "tp");
    onlyOn("dispatch_tokens", [](const ModuleComm& c) { return c.dispatchTokens; }, "ep");
    onlyOn("local_experts", [](const ModuleComm& c) { return c.localExperts; }, "ep");

    std::vector<LayerPlan> out(static_cast<size_t>(config.numHiddenLayers));
    std::vector<std::string> inRegions;  // modules computed inside some region
    for (int64_t i = 0; i < config.numHiddenLayers; ++i) {
      const auto p = ref::layerPrefix(i);
      auto& lp = out[static_cast<size_t>(i)];
      Region attn{p + "self_attn", {p + "self_attn.q_proj", p + "self_attn.k_proj", p + "self_attn.v_proj"},
                  p + "self_attn.o_proj"};
      // deepseek_v3's latent attention: the per-head projections q_b_proj
      // (q_proj without q_lora_rank) and kv_b_proj read the region's input;
      // the low-rank a-projections and their norms sit inside the region,
      // replicated, with partial tp gradients (ModelPlan::tpPartial).
      if (ref::familyOf(config).latentAttention())
        attn.entries = {p + (config.qLoraRank > 0 ? "self_attn.q_b_proj" : "self_attn.q_proj"),
                        p + "self_attn.kv_b_proj"};
      lp.attnTp = regionIsTp(attn);
      if (lp.attnTp) lp.activeRegions.push_back(attn);
      if (sp && !lp.attnTp) fail("plan: ", attn.scope, ": sequence_parallel needs tensor-parallel attention");
      inRegions.push_back(attn.scope);
      if (config.isMoeLayer(i)) {
        const std::string experts = p + "mlp.experts",
                          router = p + (ref::familyOf(config).gptOssLayers() ? "mlp.router" : "mlp.gate");
        // gpt_oss: the row-parallel down_proj_bias stays whole under tp (it
        // is added once, after the reduction: styles/gpt_oss_down_rowwise.cpp).
        const std::string wholeUnderTp =
            ref::familyOf(config).gptOssLayers() ? experts + ".down_proj_bias" : "";
        for (const char* dim : {"tp", "ep"})
          if (!moduleUniformOn(experts, dim, std::string(dim) == "tp" ? wholeUnderTp : ""))
            fail("plan: ", experts, ": gate_up_proj and down_proj must be sharded over ", dim, " together (",
                 stylesOf(experts), ")");
        lp.moeTp = moduleShardedOn(experts, "tp");
        if (lp.moeTp && !plan.comm(experts, "tp").sumExpertOutputs)
          fail("plan: ", experts, ": tp-sharded experts need a style declaring sum_expert_outputs on tp (",
               "moe_experts_allreduce); ", stylesOf(experts));
        lp.epOn = moduleShardedOn(experts, "ep");
        const bool dispatch = plan.comm(router, "ep").dispatchTokens;
        if (lp.epOn && !dispatch)
          fail("plan: ", p, "mlp: ep-sharded experts need a router style declaring dispatch_tokens on ep ",
               "(ep_router); ", router, " has ", stylesOf(router));
        if (lp.epOn && !plan.comm(experts, "ep").localExperts)
          fail("plan: ", experts, " is sharded over ep but its style declares no local_experts (", stylesOf(experts),
               ")");
        if (dispatch && !lp.epOn && epSize > 1)
          fail("plan: ", router, ": ep_router needs grouped_gemm experts (", experts, " is not sharded over ep)");
        inRegions.push_back(experts);
        if (config.nSharedExperts > 0) {  // deepseek_v3: the shared experts are a dense MLP
          const std::string s = p + "mlp.shared_experts";
          const Region shared{s, {s + ".gate_proj", s + ".up_proj"}, s + ".down_proj"};
          lp.sharedTp = regionIsTp(shared);
          if (lp.sharedTp) lp.activeRegions.push_back(shared);
          inRegions.push_back(s);
        }
      } else {
        const Region mlp{p + "mlp", {p + "mlp.gate_proj", p + "mlp.up_proj"}, p + "mlp.down_proj"};
        lp.mlpTp = regionIsTp(mlp);
        if (lp.mlpTp) lp.activeRegions.push_back(mlp);
        if (sp && !lp.mlpTp) fail("plan: ", mlp.scope, ": sequence_parallel needs tensor-parallel dense MLPs");
        inRegions.push_back(mlp.scope);
      }
    }
    // Everything else (embedding, norms, router, lm_head, shared experts) is
    // computed whole on every rank: a plan that shards it is an error.
    for (const auto& pp : plan.params) {
      bool inside = false;
      for (const auto& r : inRegions) inside |= pp.name.rfind(r + ".", 0) == 0;
      if (inside) continue;
      for (size_t d = 0; d < pp.placements.size(); ++d)
        if (pp.placements[d].isSharded() && mesh.dims()[d].size > 1)
          fail("plan: ", pp.name, ": the distributed model computes it replicated (it is in no tensor-parallel ",
               "region or experts module), but its placements shard it on '", mesh.dims()[d].name, "' (style ",
               pp.style.empty() ? "none" : pp.style, ")");
    }
    return out;
  }

  const plan::AppliedPlan& plan;
  const mesh::MeshShape& mesh;
  const ref::ModelConfig& config;
  bool sp = false;
  int epSize = 1;
};

}  // namespace

ModelPlan readModelPlan(const plan::AppliedPlan& plan, const mesh::MeshShape& mesh, const ref::ModelConfig& config) {
  Reader r(plan, mesh, config);
  r.epSize = mesh.has("ep") ? mesh.size("ep") : 1;
  const int tpSize = mesh.has("tp") ? mesh.size("tp") : 1;
  r.sp = tpSize > 1 && r.declaresOn("tp", [](const ModuleComm& c) { return c.sequenceParallel; });
  ModelPlan out;
  out.sp = r.sp;
  out.layers = r.planLayers();
  return out;
}

bool ModelPlan::tpPartial(const std::string& name, int tpSize) const {
  if (tpSize <= 1) return false;
  if (sp) return true;
  for (const auto& lp : layers)
    for (const auto& r : lp.activeRegions) {
      if (name.rfind(r.scope + ".", 0) != 0) continue;
      bool boundary = name.rfind(r.exit + ".", 0) == 0;
      for (const auto& e : r.entries) boundary |= name.rfind(e + ".", 0) == 0;
      if (!boundary) return true;
    }
  return false;
}

}  // namespace moe::parallel
