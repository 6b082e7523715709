#include "harness/checks/finite_check.h"

#include <cmath>

#include "common/error.h"
#include "common/json_number.h"
#include "common/registry.h"
#include "harness/checks/check_common.h"
#include "reference/io/nonfinite.h"
#include "reference/placement/dist_tensor.h"

namespace moe::checks {

std::optional<ref::NonFiniteValue> firstNonFiniteShard(int64_t step, const std::string& quantity,
                                                      const std::vector<ParamShard>& shards,
                                                      const std::vector<int>& meshSizes,
                                                      const std::vector<int>& meshCoords) {
  for (const ParamShard& p : shards) {
    if (!p.local.defined()) continue;
    const io::NonFiniteScan s = io::scanNonFinite(p.local);
    if (!s.found()) continue;
    std::string global;
    if (!meshSizes.empty() && p.placements.size() == meshSizes.size()) {
      try {
        const ref::LocalLayout layout = ref::computeLayout(p.globalShape, p.placements, meshSizes, meshCoords);
        if (layout.localShape == p.local.sizes().vec()) global = "; global " + shapeString(layout.globalIndex(s.firstIndex));
      } catch (const std::exception&) {
        // A layout the placements cannot give is the placement check's
        // business; the local index still locates the value.
      }
    }
    std::string detail = io::describeNonFinite(s);  // "index [..] (flat f) is nan; ..."
    if (!global.empty()) detail.insert(detail.find(')'), global);
    return ref::NonFiniteValue{step, quantity, p.name, "local " + detail};
  }
  return std::nullopt;
}

bool finiteRecord(const StepRecord& r) {
  return std::isfinite(r.loss) && std::isfinite(r.ce) && std::isfinite(r.aux) && std::isfinite(r.gradNorm);
}

std::vector<ref::NonFiniteValue> scanStep(const StepRecord& record, const std::vector<ParamShard>* grads,
                                          const std::vector<ParamShard>* params, const std::vector<int>& meshSizes,
                                          const std::vector<int>& meshCoords) {
  std::vector<ref::NonFiniteValue> out;
  auto scalar = [&](const char* quantity, double x) {
    if (!std::isfinite(x)) out.push_back({record.step, quantity, "", "is " + nonFiniteName(x)});
  };
  scalar("loss", record.loss);
  scalar("ce", record.ce);
  scalar("aux", record.aux);
  if (grads)
    if (auto g = firstNonFiniteShard(record.step, "gradient", *grads, meshSizes, meshCoords)) out.push_back(*g);
  scalar("grad_norm", record.gradNorm);
  if (params)
    if (auto p = firstNonFiniteShard(record.step, "parameter", *params, meshSizes, meshCoords)) out.push_back(*p);
  return out;
}

FiniteInputs finiteInputsOf(const CheckContext& ctx) {
  mesh::DeviceMesh& mesh = require(ctx.mesh, "finite", "mesh");
  FiniteInputs in;
  in.rank = mesh.world()->globalRanks()[mesh.world()->rank()];
  in.meshSizes = ref::meshSizes(mesh);
  in.meshCoords = mesh.coords();
  in.runSteps = ctx.runSteps;
  in.runNonFinite = ctx.runNonFinite;
  in.finalParams = ctx.finalParams;
  in.referenceNonFinite = ctx.referenceNonFinite;
  return in;
}

std::string localFiniteFailure(const FiniteInputs& in) {
  const auto& steps = require(in.runSteps, "finite", "run step records");
  std::vector<ref::NonFiniteValue> found;
  if (in.runNonFinite) found = *in.runNonFinite;
  // The records themselves, in case the run did not scan (or scanned later).
  for (const StepRecord& r : steps) {
    if (!found.empty() && found.front().step <= r.step) break;
    if (!finiteRecord(r)) {
      found = scanStep(r, nullptr, nullptr);
      break;
    }
  }
  // Parameters after the last step: a value that became non-finite without
  // making any loss or grad norm non-finite (the last update).
  if (found.empty() && in.finalParams && !steps.empty())
    if (auto p = firstNonFiniteShard(steps.back().step, "parameter", *in.finalParams, in.meshSizes, in.meshCoords))
      found.push_back(*p);
  std::string failure;
  for (const auto& v : found) failure += (failure.empty() ? "" : "; ") + v.describe();
  if (!failure.empty()) return moe::str("rank ", in.rank, ": ", failure);
  if (in.rank == 0 && in.referenceNonFinite && !in.referenceNonFinite->empty()) {
    std::string ref;
    for (const auto& v : *in.referenceNonFinite) ref += (ref.empty() ? "" : "; ") + v.describe();
    return "reference: " + ref + " (the single-device reference is not finite: the run cannot be judged against it)";
  }
  return "";
}

CheckResult checkFinite(comm::Communicator& world, const FiniteInputs& in) {
  std::string mine;
  try {
    mine = localFiniteFailure(in);
  } catch (const HarnessError& e) {
    mine = moe::str("rank ", in.rank, ": ", e.what());  // still take part in the agreement
  }
  const Verdict v = agreeVerdict(world, mine);
  CheckResult r;
  r.check = "finite";
  r.passed = !v.failed;
  r.measured = {{"nonfinite_ranks", v.failingRanks},
                {"reference_nonfinite", in.referenceNonFinite && !in.referenceNonFinite->empty()},
                {"steps", in.runSteps ? in.runSteps->size() : 0}};
  r.explanation = v.failed ? v.explanation
                           : moe::str("loss, ce, aux, grad norm, every gradient and every parameter finite on every "
                                      "rank for ",
                                      in.runSteps ? in.runSteps->size() : 0, " steps");
  return r;
}

CheckResult FiniteCheck::run(const CheckContext& ctx) const {
  return checkFinite(*require(ctx.mesh, "finite", "mesh").world(), finiteInputsOf(ctx));
}

MOE_REGISTER(Check, FiniteCheck);

}  // namespace moe::checks
