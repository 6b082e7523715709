// aux_loss_local_scope: the load-balancing statistics (per-expert selection
// counts and router probabilities) are computed over the rank's own tokens
// only, as a per-rank load_balancing_loss_func does, instead of over the
// global batch. Killed by parity: step 1 aux differs from the reference's.
#include "harness/mutate/mutant.h"

namespace moe::mutants {

MutantDef makeAuxLossLocalScopeMutant() {
  MutantDef m;
  m.spec.name = "aux_loss_local_scope";
  m.spec.description = "load-balancing (aux) statistics computed over the local tokens only, not all-reduced";
  m.spec.injectionPoint = "reference/parallel/dist_model.cpp: forwardLoss (auxStatsLocal)";
  m.spec.intendedCheck = "parity";
  m.spec.runs = {runPlanJob("ep2", 2, R"({"ep":2})", "ep")};
  m.install = [](MutationPoints& p) { p.auxStatsLocal = [] { return true; }; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeAuxLossLocalScopeMutant);

}  // namespace moe::mutants
