// router_bias_loads_local: deepseek_v3's correction-bias rule counts the
// expert loads on the rank's own tokens instead of the global batch (the
// loads' all-reduce over the token-partitioning ranks is skipped), so the
// biases of the ranks drift apart and away from the single device's.
// Killed by parity: after step 1 the final e_score_correction_bias differs
// from the reference's.
#include "harness/mutate/mutants/deepseek_jobs.h"

namespace moe::mutants {

MutantDef makeRouterBiasLoadsLocalMutant() {
  MutantDef m;
  m.spec.name = "router_bias_loads_local";
  m.spec.description = "deepseek_v3 correction-bias loads counted on the local tokens only (biases drift apart across ranks)";
  m.spec.injectionPoint = "reference/parallel/dist_model.cpp: step (biasLoadsLocal)";
  m.spec.intendedCheck = "parity";
  m.spec.runs = {deepseekRunPlanJob("deepseek_ep2", 2, R"({"ep":2})", "ep", /*steps=*/2)};
  m.install = [](MutationPoints& p) { p.biasLoadsLocal = [] { return true; }; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeRouterBiasLoadsLocalMutant);

}  // namespace moe::mutants
