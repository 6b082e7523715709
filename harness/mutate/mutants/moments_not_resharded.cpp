// moments_not_resharded: a resume reads every AdamW moment as the box at
// offset 0 of the rank's local shape (the saving rank 0's piece) instead of
// the rank's own slice: the optimizer state is not resharded with its
// parameter. Killed by resume_parity: ep rank 1's expert moments are those
// of experts 0-1, not the reference's moments of experts 2-3.
#include "harness/mutate/mutant.h"

namespace moe::mutants {
namespace {

bool notResharded() { return true; }

}  // namespace

MutantDef makeMomentsNotReshardedMutant() {
  MutantDef m;
  m.spec.name = "moments_not_resharded";
  m.spec.description = "optimizer moments are restored from rank 0's piece instead of being resharded with their parameter";
  m.spec.injectionPoint = "reference/parallel/dist_checkpoint.cpp: loadResumeState (momentsNotResharded)";
  m.spec.intendedCheck = "resume_parity";
  m.spec.runs = {runPlanJob("ep2.roundtrip", 2, R"({"ep":2})", "ep", 2,
                            {"--save", "{tmp}/moe-mutant-save-{job}", "--save-at", "1", "--resume-roundtrip"})};
  m.install = [](MutationPoints& p) { p.momentsNotResharded = notResharded; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeMomentsNotReshardedMutant);

}  // namespace moe::mutants
