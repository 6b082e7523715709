// ep_zero3_mismatched_init: under EP + ZeRO-3 the expert parameters take
// another initialisation path than the dense ones, and that path issues a
// collective (a world broadcast of the freshly partitioned expert masters)
// on the ranks of expert shard 0 only. The other ranks go on to their next
// collective, so the job's ranks disagree on the collective sequence: in a
// real stack this is the loading hang. Killed by desync: the communicator's
// fingerprint exchange reports the mismatch with every rank's trace, within
// the communication timeout, instead of hanging.
#include <ATen/ATen.h>

#include <algorithm>
#include <string>
#include <vector>

#include "harness/comm/communicator.h"
#include "harness/mesh/device_mesh.h"
#include "harness/mutate/mutant.h"

namespace moe::mutants {
namespace {

void broadcastOnExpertShard0(const mesh::DeviceMesh& mesh, const std::vector<std::string>& groupDims,
                             at::Tensor& master) {
  // master: [partition elements] float32 leaf
  // Expert groups are partitioned over edp, which excludes ep; dense groups
  // span ep too.
  const bool expertGroup = mesh.has("ep") && mesh.size("ep") > 1 &&
                           std::find(groupDims.begin(), groupDims.end(), "ep") == groupDims.end();
  if (!expertGroup || mesh.coord("ep") != 0) return;
  at::NoGradGuard noGrad;
  auto copy = master.detach().clone();
  mesh.world()->broadcast(copy, 0);
}

}  // namespace

MutantDef makeEpZero3MismatchedInitMutant() {
  MutantDef m;
  m.spec.name = "ep_zero3_mismatched_init";
  m.spec.description =
      "under EP + ZeRO-3 the expert initialisation path broadcasts over the world on expert shard 0's ranks only";
  m.spec.injectionPoint = "reference/parallel/stores/zero3_store.cpp: Zero3Store constructor (zero3GroupInit)";
  m.spec.intendedCheck = "desync";
  // --comm-timeout: were the mismatch ever to turn into a hang again, the
  // job still ends (as a timeout, which does not count as a kill).
  m.spec.runs = {runPlanJob("dp2_ep2_zero3", 4, R"({"dp":2,"ep":2})", "ep", 1,
                            {"--wrapper", "zero3", "--comm-timeout", "30"})};
  m.install = [](MutationPoints& p) { p.zero3GroupInit = broadcastOnExpertShard0; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeEpZero3MismatchedInitMutant);

}  // namespace moe::mutants
