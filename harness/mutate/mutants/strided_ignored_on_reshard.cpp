// strided_ignored_on_reshard: a resume reads the checkpoint's fused
// gate_up_proj with plain Shard instead of the plan's StridedShard(-2, 2)
// (Megatron-LM#2769): tp rank 0 gets all gate rows, rank 1 all up rows.
// Killed by resume_parity: the loaded parameters are not the reference's
// state at the save step (a single-job save + resume, --resume-roundtrip).
#include "harness/mutate/mutant.h"

namespace moe::mutants {
MutantDef makeStridedIgnoredOnReshardMutant() {
  MutantDef m;
  m.spec.name = "strided_ignored_on_reshard";
  m.spec.description = "a resume slices StridedShard tensors (fused gate_up_proj under tp) with plain Shard";
  m.spec.injectionPoint = "reference/parallel/dist_checkpoint.cpp: loadResumeState (resumePlacements)";
  m.spec.intendedCheck = "resume_parity";
  m.spec.runs = {runPlanJob("tp2.moe_tp.roundtrip", 2, R"({"tp":2})", "moe_tp", 2,
                            {"--save", "{tmp}/moe-mutant-save-{job}", "--save-at", "1", "--resume-roundtrip"})};
  m.install = [](MutationPoints& p) { p.resumePlacements = stridedAsPlainShard; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeStridedIgnoredOnReshardMutant);

}  // namespace moe::mutants
