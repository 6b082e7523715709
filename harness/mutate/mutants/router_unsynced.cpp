// router_unsynced: the replicated router (mlp.gate.weight) is initialised
// with a different seed on one rank (per-rank RNG state at init, no
// broadcast), so the ranks route the same token differently. Killed by
// placement: the router is not identical on the ranks that replicate it.
#include <ATen/ATen.h>

#include <string>

#include "harness/comm/communicator.h"
#include "harness/mutate/mutant.h"
#include "reference/plan/plan.h"

namespace moe::mutants {
namespace {

void reinitOnRank1(comm::Communicator& world, const mesh::MeshShape&, const parallel::LoadPath&,
                   const plan::ParamPlacement& param, at::Tensor& local) {
  // local: [E, H] float32 router weight, replicated
  const std::string suffix = "mlp.gate.weight";
  const bool router = param.name.size() >= suffix.size() &&
                      param.name.compare(param.name.size() - suffix.size(), suffix.size(), suffix) == 0;
  if (!router || world.rank() != 1) return;
  // Values of another "seed": a deterministic pattern of the init's scale.
  auto other = at::sin(at::arange(local.numel(), local.options()) * 0.731 + 0.5) * 0.02;
  local.copy_(other.view(local.sizes()));
}

}  // namespace

MutantDef makeRouterUnsyncedMutant() {
  MutantDef m;
  m.spec.name = "router_unsynced";
  m.spec.description = "router weights initialised differently on one rank (rank 1 uses another seed)";
  m.spec.injectionPoint = "reference/parallel/loading.cpp: finish() (afterLoadParam), every path";
  m.spec.intendedCheck = "placement";
  m.spec.runs = {runPlanJob("ep2", 2, R"({"ep":2})", "ep")};
  m.install = [](MutationPoints& p) { p.afterLoadParam = reinitOnRank1; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeRouterUnsyncedMutant);

}  // namespace moe::mutants
