// experts_saved_local_index: each ep rank saves its experts under their
// LOCAL index (piece offset 0 on the expert dim), so the ep ranks write the
// same expert keys and experts of the later ranks are never saved
// (KempnerForge#202). Killed by checkpoint_complete: "expert keys of ... are
// not unique and complete: experts 0-1 written more than once, experts 2-3
// missing".
#include "harness/mutate/mutant.h"

namespace moe::mutants {
namespace {

void localIndex(bool isExpert, const std::vector<int64_t>& localOffsets, std::vector<int64_t>& globalOffsets) {
  if (isExpert && !globalOffsets.empty()) globalOffsets[0] = localOffsets[0];
}

}  // namespace

MutantDef makeExpertsSavedLocalIndexMutant() {
  MutantDef m;
  m.spec.name = "experts_saved_local_index";
  m.spec.description = "ep ranks save their experts under the local expert index instead of the global one";
  m.spec.injectionPoint = "reference/parallel/dist_checkpoint.cpp: ownedPieces (savePieceOffsets)";
  m.spec.intendedCheck = "checkpoint_complete";
  m.spec.runs = {runPlanJob("ep2.save", 2, R"({"ep":2})", "ep", 2,
                            {"--save", "{tmp}/moe-mutant-save-{job}", "--save-at", "1"})};
  m.install = [](MutationPoints& p) { p.savePieceOffsets = localIndex; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeExpertsSavedLocalIndexMutant);

}  // namespace moe::mutants
