// complete_marker_first: the completion marker is written right after
// INTENT, before any rank file, so a save interrupted later looks complete.
// Killed by checkpoint_complete: the journal shows COMPLETE before the rank
// files.
#include "harness/mutate/mutant.h"

namespace moe::mutants {
namespace {

bool markerFirst() { return true; }

}  // namespace

MutantDef makeCompleteMarkerFirstMutant() {
  MutantDef m;
  m.spec.name = "complete_marker_first";
  m.spec.description = "the checkpoint's COMPLETE marker is written before the rank files and metadata";
  m.spec.injectionPoint = "reference/parallel/dist_checkpoint.cpp: saveDistCheckpoint (completeMarkerFirst)";
  m.spec.intendedCheck = "checkpoint_complete";
  m.spec.runs = {runPlanJob("ep2.save", 2, R"({"ep":2})", "ep", 2,
                            {"--save", "{tmp}/moe-mutant-save-{job}", "--save-at", "1"})};
  m.install = [](MutationPoints& p) { p.completeMarkerFirst = markerFirst; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeCompleteMarkerFirstMutant);

}  // namespace moe::mutants
