// fsdp_experts_on_dp_group: the FSDP store gives the ep-sharded experts the
// dense parameters' data-parallel group (every non-tp mesh dim) instead of
// their expert-data-parallel group (edp), the "expert params wrapped with
// the dense FSDP mesh / reduced over the data_parallel_group" bug of
// FSDP/ZeRO + EP stacks. The store can still only shard the experts over
// the dims their plan placements leave replicated (ep already splits them),
// so their storage is unchanged, but their gradient is also summed over ep:
// every rank's expert gradient becomes the sum of the gradients of
// DIFFERENT experts (rank ep=0's experts 0-3 plus rank ep=1's experts 4-7).
// Invisible in step 1's loss; killed by parity's step-1 gradient comparison
// (the worst element names the expert index and both values).
#include <algorithm>

#include "harness/mesh/device_mesh.h"
#include "harness/mutate/mutant.h"
#include "reference/plan/plan.h"

namespace moe::mutants {
namespace {

void denseGroupForExperts(const plan::ParamPlacement& param, const mesh::DeviceMesh& mesh,
                          std::vector<std::string>& dims) {
  const int ep = mesh.shape().index("ep");
  if (!param.isExpert || ep < 0 || !param.placements[ep].isSharded()) return;
  dims.clear();  // what a dense parameter gets: every data-parallel dim
  for (const auto& d : mesh.dims())
    if (d.name != "tp") dims.push_back(d.name);
}

}  // namespace

MutantDef makeFsdpExpertsOnDpGroupMutant() {
  MutantDef m;
  m.spec.name = "fsdp_experts_on_dp_group";
  m.spec.description =
      "fsdp: ep-sharded experts get the dense data-parallel group (dp x ep) instead of edp: their gradients are "
      "summed over ep too, adding the gradients of different experts";
  m.spec.injectionPoint = "reference/parallel/stores/fsdp_store.cpp: FsdpStore::build (fsdpGroupDims)";
  m.spec.intendedCheck = "parity";
  m.spec.runs = {runPlanJob("dp2_ep2_fsdp", 4, R"({"dp":2,"ep":2})", "ep", 1, {"--wrapper", "fsdp"}),
                 runPlanJob("dp2_ep2_fsdp_experts_none", 4, R"({"dp":2,"ep":2})", "ep", 1,
                            {"--wrapper", "fsdp", "--fsdp-experts", "none"})};
  m.install = [](MutationPoints& p) { p.fsdpGroupDims = denseGroupForExperts; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeFsdpExpertsOnDpGroupMutant);

}  // namespace moe::mutants
