// sp_norm_grad_not_reduced: under sequence parallelism the RMSNorm weights'
// gradients are partial per tp rank (each rank saw its sequence shard) but
// are not summed over tp (the Megatron "sequence_parallel" grad all-reduce
// forgotten). Killed by parity: the step-1 gradient of a norm weight is
// only one rank's share of the reference's.
#include "harness/mutate/mutant.h"
#include "reference/parallel/param_store.h"

namespace moe::mutants {
namespace {

bool isNormWeight(const std::string& name) {
  auto ends = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return ends("layernorm.weight") || name == "model.norm.weight";
}

void skipTpSum(const plan::ParamPlacement& param, bool sequenceParallel, parallel::GradReduction& red) {
  if (sequenceParallel && isNormWeight(param.name)) red.tpPartial = false;
}

}  // namespace

MutantDef makeSpNormGradNotReducedMutant() {
  MutantDef m;
  m.spec.name = "sp_norm_grad_not_reduced";
  m.spec.description = "sequence-parallel norm weight gradients not summed over tp";
  m.spec.injectionPoint = "reference/parallel/dist_model.cpp: DistTrainer::Impl ctor (gradReduction)";
  m.spec.intendedCheck = "parity";
  m.spec.runs = {runPlanJob("tp2.moe_tp_sp", 2, R"({"tp":2})", "moe_tp_sp")};
  m.install = [](MutationPoints& p) { p.gradReduction = skipTpSum; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeSpNormGradNotReducedMutant);

}  // namespace moe::mutants
