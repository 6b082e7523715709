// expert_grad_wrong_scale: expert gradients are averaged over the dense
// data-parallel world (every non-tp rank) instead of their expert-data-
// parallel group, i.e. scaled by edp / dp = 1/ep (DeepSpeed/Megatron-style
// "wrong group size" bug). Invisible in the loss curve (Adam is
// scale-insensitive); killed by parity's per-parameter step-1 gradient
// comparison with the run/reference norm ratio (0.500 on dp=2 x ep=2), with
// the replicated wrapper and under fsdp (experts sharded over edp = dp).
#include "harness/mesh/device_mesh.h"
#include "harness/mutate/mutant.h"
#include "reference/plan/plan.h"

namespace moe::mutants {
namespace {

void averageOverDenseDp(const plan::ParamPlacement& param, const mesh::DeviceMesh& mesh, int64_t groupSize,
                        at::Tensor& grad) {
  const int ep = mesh.shape().index("ep");
  if (!param.isExpert || ep < 0 || !param.placements[ep].isSharded()) return;
  int64_t denseDp = 1;  // the ranks a dense parameter's gradient is averaged over
  for (const auto& d : mesh.dims())
    if (d.name != "tp") denseDp *= d.size;
  grad.mul_(static_cast<double>(groupSize) / static_cast<double>(denseDp));
}

}  // namespace

MutantDef makeExpertGradWrongScaleMutant() {
  MutantDef m;
  m.spec.name = "expert_grad_wrong_scale";
  m.spec.description = "expert gradients averaged over dp (all data-parallel ranks) instead of edp: 1/ep too small";
  m.spec.injectionPoint =
      "reference/parallel/param_store.cpp, stores/fsdp_store.cpp, stores/zero3_store.cpp: ParamStore::reduceGradients (reducedGrad)";
  m.spec.intendedCheck = "parity";
  m.spec.runs = {runPlanJob("dp2_ep2", 4, R"({"dp":2,"ep":2})", "ep"),
                 runPlanJob("dp2_ep2_fsdp", 4, R"({"dp":2,"ep":2})", "ep", 1, {"--wrapper", "fsdp"}),
                 runPlanJob("dp2_ep2_zero3", 4, R"({"dp":2,"ep":2})", "ep", 1, {"--wrapper", "zero3"})};
  m.install = [](MutationPoints& p) { p.reducedGrad = averageOverDenseDp; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeExpertGradWrongScaleMutant);

}  // namespace moe::mutants
