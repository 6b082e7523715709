// a2a_split_off_by_one: the dispatch's split sizes are one row short: the
// last routed (token, expert) row of the expert-major order is never sent
// (an exclusive-end / cumsum off-by-one), so that token misses one expert's
// output. Killed by communication: the dispatch volume is one row per MoE
// layer and rank below tokens x top-k.
#include "harness/mutate/mutant.h"

namespace moe::mutants {
namespace {

void dropLastRow(at::Tensor& counts) {
  // counts: [ep, local experts] int64, expert-major = the permuted row order
  // Edited on the host and written back, so the mutant runs on either device lane.
  auto flat = counts.view({-1}).cpu();
  auto acc = flat.accessor<int64_t, 1>();
  for (int64_t i = flat.size(0) - 1; i >= 0; --i)
    if (acc[i] > 0) {
      acc[i] -= 1;
      break;
    }
  if (!counts.is_cpu()) counts.view({-1}).copy_(flat);
}

}  // namespace

MutantDef makeA2aSplitOffByOneMutant() {
  MutantDef m;
  m.spec.name = "a2a_split_off_by_one";
  m.spec.description = "all_to_all dispatch split sizes off by one: the last routed row of each rank is not sent";
  m.spec.injectionPoint = "reference/parallel/ep_dispatch.cpp: epExpertsForward (dispatchCounts)";
  m.spec.intendedCheck = "communication";
  m.spec.runs = {runPlanJob("ep2", 2, R"({"ep":2})", "ep")};
  m.install = [](MutationPoints& p) { p.dispatchCounts = dropLastRow; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeA2aSplitOffByOneMutant);

}  // namespace moe::mutants
