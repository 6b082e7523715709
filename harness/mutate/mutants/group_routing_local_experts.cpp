// group_routing_local_experts: under expert parallelism each rank scores
// deepseek_v3's expert groups over its local experts only (the others count
// as -inf), so the group-limited top-k keeps the rank's own groups and the
// ranks route like no single device would. Killed by parity: step 1's loss
// and gradients differ from the reference's.
#include "harness/mutate/mutants/deepseek_jobs.h"

namespace moe::mutants {

MutantDef makeGroupRoutingLocalExpertsMutant() {
  MutantDef m;
  m.spec.name = "group_routing_local_experts";
  m.spec.description = "deepseek_v3 group-limited routing computed over the rank's local experts only";
  m.spec.injectionPoint = "reference/parallel/dist_model.cpp: moeLayer (groupScoresLocalExperts)";
  m.spec.intendedCheck = "parity";
  m.spec.runs = {deepseekRunPlanJob("deepseek_ep2", 2, R"({"ep":2})", "ep", /*steps=*/1)};
  m.install = [](MutationPoints& p) { p.groupScoresLocalExperts = [] { return true; }; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeGroupRoutingLocalExpertsMutant);

}  // namespace moe::mutants
