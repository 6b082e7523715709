// tp_partial_not_reduced: the all-reduce of the experts' Partial(sum)
// outputs over tp is missing (moe_experts_allreduce forgotten), so each tp
// rank continues with its own partial expert output. Killed by
// communication: one all_reduce per MoE layer is missing on group tp.
#include "harness/mutate/mutant.h"

namespace moe::mutants {

MutantDef makeTpPartialNotReducedMutant() {
  MutantDef m;
  m.spec.name = "tp_partial_not_reduced";
  m.spec.description = "the all-reduce of the experts' partial outputs over tp is missing";
  m.spec.injectionPoint =
      "reference/parallel/dist_model.cpp: reducePartialExperts; ep_dispatch.cpp (reduceExpertOutputs)";
  m.spec.intendedCheck = "communication";
  m.spec.runs = {runPlanJob("tp2.moe_tp", 2, R"({"tp":2})", "moe_tp")};
  m.install = [](MutationPoints& p) {
    p.reduceExpertOutputs = [](const at::Tensor& partial, comm::Communicator&) { return partial; };
  };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeTpPartialNotReducedMutant);

}  // namespace moe::mutants
