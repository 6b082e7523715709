// shared_expert_grad_on_edp: deepseek_v3's shared experts (a dense MLP,
// replicated on every data-parallel rank) get the routed experts' gradient
// group, the expert-data-parallel dims (ep left out), so their gradients are
// not summed over the ep ranks that hold different tokens. Killed by parity:
// the step-1 gradient of mlp.shared_experts.* is the local half.
#include <algorithm>

#include "harness/mutate/mutants/deepseek_jobs.h"
#include "reference/parallel/param_store.h"
#include "reference/plan/plan.h"

namespace moe::mutants {
namespace {

void sharedOnEdp(const plan::ParamPlacement& param, bool, parallel::GradReduction& r) {
  if (param.name.find(".mlp.shared_experts.") == std::string::npos) return;
  auto& d = r.dataParallelDims;
  d.erase(std::remove(d.begin(), d.end(), std::string("ep")), d.end());
}

}  // namespace

MutantDef makeSharedExpertGradOnEdpMutant() {
  MutantDef m;
  m.spec.name = "shared_expert_grad_on_edp";
  m.spec.description = "deepseek_v3 shared-expert gradients reduced over the expert-data-parallel group (not over ep)";
  m.spec.injectionPoint = "reference/parallel/dist_model.cpp: DistTrainer ctor (gradReduction)";
  m.spec.intendedCheck = "parity";
  m.spec.runs = {deepseekRunPlanJob("deepseek_ep2", 2, R"({"ep":2})", "ep", /*steps=*/1)};
  m.install = [](MutationPoints& p) { p.gradReduction = sharedOnEdp; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeSharedExpertGradOnEdpMutant);

}  // namespace moe::mutants
