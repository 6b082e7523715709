// strided_as_plain_shard: the loader slices the fused experts.gate_up_proj
// [E, 2I, H] with plain Shard(-2) instead of the declared StridedShard(-2, 2),
// so tp rank 0 gets all gate rows and rank 1 all up rows (the "gate/up split
// in the wrong order" bug). Killed by placement: the local values are not
// the declared slice of the checkpoint, and the message says they are the
// plain Shard slice.
#include "harness/mutate/mutant.h"

namespace moe::mutants {
MutantDef makeStridedAsPlainShardMutant() {
  MutantDef m;
  m.spec.name = "strided_as_plain_shard";
  m.spec.description = "fused gate_up_proj is sliced with plain Shard instead of StridedShard(-2, 2) when loaded";
  m.spec.injectionPoint =
      "reference/parallel/dist_model.cpp: loadLocalParams; loading.cpp: rank0_broadcast (loaderPlacements)";
  m.spec.intendedCheck = "placement";
  m.spec.runs = {runPlanJob("tp2.moe_tp", 2, R"({"tp":2})", "moe_tp")};
  m.install = [](MutationPoints& p) { p.loaderPlacements = stridedAsPlainShard; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeStridedAsPlainShardMutant);

}  // namespace moe::mutants
