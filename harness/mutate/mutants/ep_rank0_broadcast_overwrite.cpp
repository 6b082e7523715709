// ep_rank0_broadcast_overwrite: the rank-0 broadcast loader also broadcasts
// the EP-sharded expert tensors, so every ep rank ends up with rank 0's
// experts (the FSDP2 + EP loading bug). Killed by expert_uniqueness: "ranks
// 0 and 1 hold identical weights for experts 0-3: rank 1's experts 4-7 equal
// rank 0's experts 0-3".
#include "harness/mutate/mutant.h"
#include "reference/parallel/loading.h"

namespace moe::mutants {
namespace {

void overwriteWithRank0(comm::Communicator& world, const mesh::MeshShape& mesh, const parallel::LoadPath& path,
                        const plan::ParamPlacement& param, at::Tensor& local) {
  // local: [E/ep, ...] float32, the same shape on every ep rank (E % ep == 0)
  if (path == parallel::LoadPath::kRank0Broadcast && parallel::isEpSharded(param, mesh))
    world.broadcast(local, /*root=*/0);
}

}  // namespace

MutantDef makeEpRank0BroadcastOverwriteMutant() {
  MutantDef m;
  m.spec.name = "ep_rank0_broadcast_overwrite";
  m.spec.description =
      "rank-0 broadcast loading overwrites the EP-sharded experts on every rank with rank 0's experts";
  m.spec.injectionPoint = "reference/parallel/loading.cpp: finish() (afterLoadParam), rank0_broadcast path";
  m.spec.intendedCheck = "expert_uniqueness";
  m.spec.runs = {runPlanJob("ep2.rank0_broadcast", 2, R"({"ep":2})", "ep", 1, {"--load", "rank0_broadcast"})};
  m.install = [](MutationPoints& p) { p.afterLoadParam = overwriteWithRank0; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeEpRank0BroadcastOverwriteMutant);

}  // namespace moe::mutants
