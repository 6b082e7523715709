#pragma once
// The model's reading of an applied plan: which of its regions run
// tensor-parallel, where experts are sharded, whether sequence parallelism
// is on, and which replicated parameters get partial tp gradients, all
// from what the styles declared (plan::ModuleComm) and placed.
//
// The model knows its own structure (which modules it computes, and which
// of them share an input); it never decides communication from a module's
// name. A tensor-parallel region is a group of modules between one shared
// input and one output (attention: q/k/v_proj ... o_proj; a dense MLP:
// gate/up_proj ... down_proj). It runs tensor-parallel when the styles
// sharded its modules' parameters on tp; then its entry modules must
// declare enter_region and its exit module exit_region (style.h
// ModuleComm), and the forward executes exactly those. The experts
// module is its own region (sum_expert_outputs), the router declares the
// token dispatch (dispatch_tokens) and the experts their local slice
// (local_experts). Declarations on other mesh dims than the ones the
// model runs them on (tp for regions, ep for experts) are plan errors.
#include <string>
#include <vector>

#include "harness/mesh/device_mesh.h"
#include "reference/model/config.h"
#include "reference/plan/plan.h"

namespace moe::parallel {

struct Region {
  std::string scope;                 // the block: "model.layers.0.self_attn"
  std::vector<std::string> entries;  // modules reading the region's input
  std::string exit;                  // the module producing its output
};
struct LayerPlan {
  bool attnTp = false;  // attention region is tensor-parallel
  bool mlpTp = false;   // dense MLP region is tensor-parallel
  bool moeTp = false;   // experts are sharded over tp (Partial outputs)
  bool epOn = false;    // experts are sharded over ep (tokens dispatched)
  std::vector<Region> activeRegions;  // attention / dense MLP when tp
  bool sharedTp = false;  // deepseek_v3: the shared-experts MLP region is tensor-parallel
};

struct ModelPlan {
  bool sp = false;                // sequence parallelism on tp (size > 1)
  std::vector<LayerPlan> layers;  // one per decoder layer
  // The tp ranks' gradients of this tp-replicated parameter are partial
  // sums: everywhere under sequence parallelism (each rank sees its own
  // positions), and inside an active region (e.g. per-head q_norm/k_norm
  // between q/k_proj and o_proj: each rank normalises its own heads).
  bool tpPartial(const std::string& name, int tpSize) const;
};

// Pure (no communication): the same on every rank. Throws HarnessError
// naming the module and its styles for declarations the model cannot run.
ModelPlan readModelPlan(const plan::AppliedPlan& plan, const mesh::MeshShape& mesh, const ref::ModelConfig& config);

}  // namespace moe::parallel
