// style_degrades_to_replicate: the MoE tensor-parallel styles
// (moe_tp_gate_up_colwise, moe_tp_down_rowwise) return Replicate() instead
// of their shard, so every tp rank holds and computes all experts whole. The
// math stays right (parity passes: it is silent); only the placement check's
// "sharding styles really shard" side catches it.
#include <set>

#include "harness/mutate/mutant.h"

namespace moe::mutants {
namespace {

void degrade(const std::string& style, const std::string&, ref::Placement& placement) {
  static const std::set<std::string> kDegraded = {"moe_tp_gate_up_colwise", "moe_tp_down_rowwise"};
  if (kDegraded.count(style)) placement = ref::Placement::replicate();
}

}  // namespace

MutantDef makeStyleDegradesToReplicateMutant() {
  MutantDef m;
  m.spec.name = "style_degrades_to_replicate";
  m.spec.description =
      "the MoE TP sharding styles leave gate_up_proj/down_proj replicated instead of sharding them over tp";
  m.spec.injectionPoint = "reference/plan/plan.cpp: applyPlan pass 1 (placeParameter)";
  m.spec.intendedCheck = "placement";
  m.spec.runs = {runPlanJob("tp2.moe_tp", 2, R"({"tp":2})", "moe_tp")};
  m.install = [](MutationPoints& p) { p.placeParameter = degrade; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeStyleDegradesToReplicateMutant);

}  // namespace moe::mutants
