// clip_norm_double_count: every rank adds its copy of a replicated
// parameter's gradient to the global norm, so replicated parameters count
// once per replica (clip_grad_norm_ over a DDP/EP model without dedup). The
// default max norm (1.0) is below this model's grad norm (~1.47), so the
// wrong norm also changes the clipping coefficient and every update. Killed
// by parity: "step 1 grad norm X vs reference Y (ratio ...)". Under fsdp a
// plain {"ep":2} mesh replicates nothing (dense parameters are sharded over
// ep), so the fsdp job uses ep x tp with the ep_tp plan, whose norm
// weights, routers and embeddings stay replicated over tp.
#include "harness/mutate/mutant.h"

namespace moe::mutants {

MutantDef makeClipNormDoubleCountMutant() {
  MutantDef m;
  m.spec.name = "clip_norm_double_count";
  m.spec.description = "replicated parameters counted once per rank in the global grad norm used for clipping";
  m.spec.injectionPoint =
      "reference/parallel/param_store.cpp, stores/fsdp_store.cpp, stores/zero3_store.cpp: ParamStore::reduceGradients (countsInNorm)";
  m.spec.intendedCheck = "parity";
  m.spec.runs = {runPlanJob("ep2", 2, R"({"ep":2})", "ep"),
                 runPlanJob("ep2_tp2_fsdp", 4, R"({"ep":2,"tp":2})", "ep_tp", 1, {"--wrapper", "fsdp"}),
                 runPlanJob("ep2_tp2_zero3", 4, R"({"ep":2,"tp":2})", "ep_tp", 1, {"--wrapper", "zero3"})};
  m.install = [](MutationPoints& p) {
    p.countsInNorm = [](const plan::ParamPlacement&, bool& counts) { counts = true; };
  };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeClipNormDoubleCountMutant);

}  // namespace moe::mutants
