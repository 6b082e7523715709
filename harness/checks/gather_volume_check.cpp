#include "harness/checks/gather_volume_check.h"

#include <algorithm>
#include <cmath>

#include "common/registry.h"
#include "harness/checks/check_common.h"
#include "reference/placement/dist_tensor.h"
#include "reference/placement/layout.h"

namespace moe::checks {

std::vector<GatheredParam> gatheredParams(const plan::AppliedPlan& plan, const std::vector<ParamShard>& shards,
                                          const std::vector<int>& sizes, const std::vector<int>& coords) {
  const int ndim = static_cast<int>(sizes.size());
  std::vector<GatheredParam> gathered;
  for (const auto& s : shards) {
    const auto& pp = plan.param(s.name);
    std::vector<int> gatherDims;
    for (int d = 0; d < ndim; ++d)
      if (s.placements[d].isSharded() && !pp.placements[d].isSharded() && sizes[d] > 1) gatherDims.push_back(d);
    const auto local = ref::computeLayout(pp.globalShape, pp.placements, sizes, coords);
    GatheredParam g;
    g.rows = local.localShape[0];
    for (size_t i = 1; i < local.localShape.size(); ++i) g.rowNumel *= local.localShape[i];
    // Every member of this rank's gather group: its coordinates on the
    // gather dims vary, the others are this rank's.
    for (int d : gatherDims) g.groupSize *= sizes[d];
    for (int64_t m = 0; m < g.groupSize; ++m) {
      auto c = coords;
      int64_t rest = m;
      for (auto it = gatherDims.rbegin(); it != gatherDims.rend(); ++it) {
        c[*it] = static_cast<int>(rest % sizes[*it]);
        rest /= sizes[*it];
      }
      g.maxPieceRows =
          std::max(g.maxPieceRows, ref::computeLayout(s.globalShape, s.placements, sizes, c).localShape[0]);
    }
    gathered.push_back(g);
  }
  return gathered;
}

double gatherBytesSent(const CommCounters& counters, const std::string& prefix) {
  double measured = 0;
  for (const auto& [key, c] : counters)
    if (key.first.rfind(prefix, 0) == 0 && key.second == comm::OpType::kAllGather)
      measured += static_cast<double>(c.bytesSent);
  return measured;
}

CheckResult checkGatherVolume(comm::Communicator& world, double measured, const GatherVolume& volume,
                              int64_t elementBytes) {
  const double expected = volume.unpaddedBytes;
  const double ratio = expected > 0 ? measured / expected : (measured > 0 ? INFINITY : 1.0);
  const std::string failure = gatherVolumeFailure(world.rank(), measured, volume);
  auto v = agreeVerdict(world, failure);
  const auto worst = allReduceMax(world, {ratio, -ratio});
  CheckResult r;
  r.check = "fsdp_gather_volume";
  r.passed = !v.failed;
  r.measured = {{"rank0_bytes_sent", measured}, {"rank0_expected_unpadded", expected},
                {"rank0_expected_padded", volume.paddedBytes}, {"ratio", ratio},
                {"max_ratio", worst[0]}, {"min_ratio", -worst[1]}, {"even", volume.even},
                {"gather_element_bytes", elementBytes}, {"failing_ranks", v.failingRanks}};
  r.explanation = v.failed ? v.explanation
                           : moe::str("all_gather bytes / ((n-1)/n x gathered parameter bytes, ", elementBytes,
                                      " B per element) = ", -worst[1], "-", worst[0], " over the ranks",
                                      volume.even ? "" : " (uneven pieces padded)");
  return r;
}

namespace {

class GatherVolumeCheck : public Check {
 public:
  GatherVolumeCheck()
      : Check({"fsdp_gather_volume",
               "a per-parameter gathering wrapper's all_gather bytes in step 1 equal the volume the plan and the "
               "placements imply (padding included)",
               CheckStage::kAfterStep1, 90, "mesh, plan, params, commDelta, parameterGatherPrefix, computeElementBytes",
               "exact: byte counts are integers; the gather dtype is the compute dtype when narrower than fp32"}) {}
  bool applies(const CheckContext& ctx) const override { return ctx.steps >= 1 && !ctx.parameterGatherPrefix.empty(); }
  CheckResult run(const CheckContext& ctx) const override {
    const char* kName = "fsdp_gather_volume";
    mesh::DeviceMesh& mesh = require(ctx.mesh, kName, "mesh");
    const int64_t elementBytes = std::min<int64_t>(4, ctx.computeElementBytes);
    const auto volume = expectedGatherVolume(
        gatheredParams(require(ctx.plan, kName, "plan"), require(ctx.params, kName, "params"), ref::meshSizes(mesh),
                       mesh.coords()),
        elementBytes);
    const double measured =
        gatherBytesSent(require(ctx.commDelta, kName, "counter delta (CommWindow)"), ctx.parameterGatherPrefix);
    return checkGatherVolume(*mesh.world(), measured, volume, elementBytes);
  }
};

}  // namespace

MOE_REGISTER(Check, GatherVolumeCheck);

}  // namespace moe::checks
