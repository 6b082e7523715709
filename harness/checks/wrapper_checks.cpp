#include "harness/checks/wrapper_checks.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "harness/checks/check_common.h"
#include "harness/checks/comm_check.h"
#include "common/error.h"
#include "common/registry.h"
#include "reference/placement/dist_tensor.h"

namespace moe::checks {

namespace {

std::string fmt(double x) {
  std::ostringstream os;
  os.precision(9);
  os << x;
  return os.str();
}

}  // namespace

// ---- params_changed ---------------------------------------------------------

CheckResult describeParamsChanged(const std::vector<std::string>& names, const std::vector<bool>& changed) {
  MOE_ASSERT_EQ(names.size(), changed.size());
  std::vector<std::string> unchanged;
  for (size_t i = 0; i < names.size(); ++i)
    if (!changed[i]) unchanged.push_back(names[i]);
  CheckResult r;
  r.check = "params_changed";
  r.passed = unchanged.empty();
  r.measured = {{"parameters", names.size()}, {"unchanged", unchanged}};
  if (r.passed) {
    r.explanation = moe::str("all ", names.size(), " trainable parameters changed after step 1");
  } else {
    std::string list;
    for (size_t i = 0; i < unchanged.size() && i < 5; ++i) list += (i ? ", " : "") + unchanged[i];
    if (unchanged.size() > 5) list += moe::str(" and ", unchanged.size() - 5, " more");
    r.explanation = moe::str(unchanged.size(), " of ", names.size(),
                             " trainable parameters unchanged after step 1 on every rank: ", list);
  }
  return r;
}

CheckResult checkParamsChanged(comm::Communicator& world, const std::vector<ParamShard>& before,
                               const std::vector<ParamShard>& after) {
  const int rank = world.globalRanks()[world.rank()];
  std::string error;
  std::vector<double> flags(before.size(), 0.0);
  std::vector<std::string> names;
  if (before.size() != after.size())
    error = moe::str("rank ", rank, ": ", before.size(), " parameters before step 1, ", after.size(), " after");
  for (size_t i = 0; i < before.size(); ++i) {
    names.push_back(before[i].name);
    if (!error.empty()) continue;
    const auto& a = before[i];
    const auto& b = after[i];
    if (a.name != b.name || a.local.sizes() != b.local.sizes()) {
      error = moe::str("rank ", rank, ": parameter ", i, " is ", a.name, " ", shapeString(a.local.sizes()),
                       " before step 1 and ", b.name, " ", shapeString(b.local.sizes()), " after");
      continue;
    }
    flags[i] = a.local.numel() > 0 && !at::equal(a.local, b.local) ? 1.0 : 0.0;
  }
  Verdict v = agreeVerdict(world, error);
  if (v.failed) {
    CheckResult r;
    r.check = "params_changed";
    r.explanation = v.explanation;
    r.measured = {{"failing_ranks", v.failingRanks}};
    return r;
  }
  flags = allReduceMax(world, flags);
  std::vector<bool> changed;
  for (double f : flags) changed.push_back(f > 0);
  return describeParamsChanged(names, changed);
}

// ---- wrapper_communication -------------------------------------------------

CommCounters countersWithPrefix(const CommCounters& counters, const std::string& prefix) {
  CommCounters out;
  for (const auto& [key, c] : counters)
    if (key.first.rfind(prefix, 0) == 0) out[key] = c;
  return out;
}

CheckResult checkWrapperComm(int rank, const CommCounters& wrapperDelta,
                             const std::vector<CommExpectation>& expected) {
  CheckResult r = checkCommunication(rank, wrapperDelta, expected);
  r.check = "wrapper_communication";
  int64_t sent = 0, want = 0, calls = 0;
  for (const auto& [key, c] : wrapperDelta) {
    sent += c.bytesSent;
    calls += c.calls;
  }
  for (const auto& e : expected) want += e.bytesSent.value_or(0);
  r.measured["bytes_sent"] = sent;
  r.measured["expected_bytes_sent"] = want;
  r.measured["calls"] = calls;
  r.measured["ratio"] = want ? static_cast<double>(sent) / static_cast<double>(want) : (sent ? INFINITY : 1.0);
  return r;
}

CheckResult checkWrapperCommCollective(comm::Communicator& world, const std::string& wrapper,
                                       const CommCounters& stepDelta, const std::vector<CommExpectation>& expected) {
  const int rank = world.globalRanks()[world.rank()];
  CheckResult local;
  std::string error;
  try {
    local = checkWrapperComm(rank, countersWithPrefix(stepDelta, wrapper + ":"), expected);
  } catch (const HarnessError& e) {
    error = moe::str("rank ", rank, ": ", e.what());
  }
  Verdict v = agreeVerdict(world, error.empty() ? (local.passed ? "" : local.explanation) : error);
  const double sent = error.empty() ? local.measured["bytes_sent"].get<double>() : 0;
  const double want = error.empty() ? local.measured["expected_bytes_sent"].get<double>() : 0;
  auto totals = allReduceSum(world, {sent, want});
  CheckResult r;
  r.check = "wrapper_communication";
  r.passed = !v.failed;
  const double ratio = totals[1] > 0 ? totals[0] / totals[1] : (totals[0] > 0 ? INFINITY : 1.0);
  r.measured = {{"wrapper", wrapper},
                {"world_bytes_sent", totals[0]},
                {"world_expected_bytes_sent", totals[1]},
                {"ratio", ratio},
                {"rank0", world.rank() == 0 ? local.measured : nlohmann::json()},
                {"failing_ranks", v.failingRanks}};
  // Only rank 0 prints the document; its table is what it holds.
  r.explanation = v.failed ? v.explanation
                           : moe::str("wrapper '", wrapper, "' sent ", totals[0], " bytes per step over the world, ",
                                      "analytical ", totals[1], " (ratio ", fmt(ratio), ")");
  return r;
}

// ---- gather volume (fsdp) ---------------------------------------------------

GatherVolume expectedGatherVolume(const std::vector<GatheredParam>& params, int64_t elementBytes) {
  GatherVolume v;
  for (const auto& p : params) {
    if (p.groupSize <= 1) continue;
    const double n = static_cast<double>(p.groupSize), row = static_cast<double>(p.rowNumel * elementBytes);
    const int64_t block = std::max<int64_t>(1, p.maxPieceRows);
    v.unpaddedBytes += (n - 1) / n * static_cast<double>(p.rows) * row;
    v.paddedBytes += (n - 1) * static_cast<double>(block) * row;
    v.even &= block * p.groupSize == p.rows;
  }
  return v;
}

std::string gatherVolumeFailure(int rank, double measured, const GatherVolume& expected) {
  const double ratio =
      expected.unpaddedBytes > 0 ? measured / expected.unpaddedBytes : (measured > 0 ? INFINITY : 1.0);
  // Byte counts are integers: "exactly" up to the double rounding of the sums.
  if (std::abs(measured - expected.paddedBytes) <= 0.5) return "";
  return moe::str("rank ", rank, ": all_gather sent ", measured, " bytes in the step, expected (n-1)/n x the ",
                  "gathered parameters", expected.even ? "" : " padded to the largest piece", " = ",
                  expected.paddedBytes, " (ratio to the unpadded ", expected.unpaddedBytes, ": ", fmt(ratio), ")");
}

// ---- memory ------------------------------------------------------------------

CheckResult checkMemoryOf(const std::vector<MemoryInputs>& ranks, const MemoryCheckOptions& options) {
  CheckResult r;
  r.check = "memory";
  std::string failure;
  double total = 0, replicated = 0, minF = INFINITY, maxF = 0;
  nlohmann::json perRank = nlohmann::json::array();
  for (size_t i = 0; i < ranks.size(); ++i) {
    const auto& m = ranks[i];
    const int64_t t = m.paramBytes + m.gradBytes + m.optimizerBytes;
    total += static_cast<double>(t);
    replicated += static_cast<double>(m.replicatedBytes);
    const double f = m.replicatedBytes ? static_cast<double>(t) / static_cast<double>(m.replicatedBytes) : 0;
    minF = std::min(minF, f);
    maxF = std::max(maxF, f);
    perRank.push_back({{"param_bytes", m.paramBytes}, {"grad_bytes", m.gradBytes},
                       {"optimizer_bytes", m.optimizerBytes}, {"replicated_total_bytes", m.replicatedBytes},
                       {"ratio", f}});
    if (failure.empty() && m.paramBytes != m.placementParamBytes + m.paddingBytes)
      failure =
          moe::str("rank ", i, ": the wrapper holds ", m.paramBytes, " parameter bytes, its placements describe ",
                   m.placementParamBytes, m.paddingBytes ? moe::str(" plus ", m.paddingBytes, " of padding") : "");
    // Gradients and the two AdamW moments are shaped like the masters.
    if (failure.empty() && (m.gradBytes != m.paramBytes || m.optimizerBytes != 2 * m.paramBytes))
      failure = moe::str("rank ", i, ": gradient bytes ", m.gradBytes, " and optimizer bytes ", m.optimizerBytes,
                         " vs parameter bytes ", m.paramBytes, " (expected equal and twice)");
  }
  const double factor = replicated > 0 ? total / replicated : 0;
  if (failure.empty() && options.expectedFactor > 0 &&
      std::abs(factor - options.expectedFactor) > options.factorTol * options.expectedFactor)
    failure = moe::str("memory factor vs the replicated layout ", fmt(factor), " (", total, " of ", replicated,
                       " bytes over the world), expected ", fmt(options.expectedFactor));
  r.passed = failure.empty();
  r.measured = {
      {"world_total_bytes", total},
      {"world_replicated_bytes", replicated},
      {"ratio", factor},
      {"expected_ratio", options.expectedFactor > 0 ? nlohmann::json(options.expectedFactor) : nlohmann::json()},
      {"min_rank_ratio", minF},
      {"max_rank_ratio", maxF},
      {"per_rank", perRank}};
  r.explanation = r.passed ? moe::str("parameters + gradients + AdamW state: ", fmt(factor),
                                      " of the replicated layout over the world (per rank ", fmt(minF), "-",
                                      fmt(maxF), ")", options.expectedFactor > 0 ? " as expected" : "")
                           : failure;
  return r;
}

CheckResult checkMemory(comm::Communicator& world, const MemoryInputs& mine, const MemoryCheckOptions& options) {
  std::ostringstream os;
  os << mine.paramBytes << ' ' << mine.gradBytes << ' ' << mine.optimizerBytes << ' ' << mine.replicatedBytes << ' '
     << mine.placementParamBytes << ' ' << mine.paddingBytes;
  std::vector<MemoryInputs> all;
  for (const auto& s : allGatherStrings(world, os.str())) {
    std::istringstream in(s);
    MemoryInputs m;
    in >> m.paramBytes >> m.gradBytes >> m.optimizerBytes >> m.replicatedBytes >> m.placementParamBytes >>
        m.paddingBytes;
    all.push_back(m);
  }
  return checkMemoryOf(all, options);
}

// ---- gradient_scale -----------------------------------------------------------

CheckResult describeGradScale(const std::vector<GradNorm>& norms, const GradScaleOptions& options) {
  CheckResult r;
  r.check = "gradient_scale";
  std::string failure;
  double worst = 0;
  std::string worstName;
  nlohmann::json per = nlohmann::json::object();
  for (const auto& n : norms) {
    // A zero reference gradient must stay zero (ratio defined as 1 then).
    const double ratio = n.reference > 0 ? n.run / n.reference : (n.run > 0 ? INFINITY : 1.0);
    per[n.name] = ratio;
    if (std::abs(ratio - 1) >= worst) {
      worst = std::abs(ratio - 1);
      worstName = n.name;
    }
    if (failure.empty() && !(std::abs(ratio - 1) <= options.tol))
      failure = moe::str(n.name, ": gradient norm ", fmt(n.run), " vs reference ", fmt(n.reference), " (ratio ",
                         fmt(ratio), ", allowed 1 +- ", options.tol, ")");
  }
  r.passed = failure.empty();
  r.measured = {{"parameters", norms.size()}, {"max_abs_ratio_minus_1", worst}, {"worst", worstName},
                {"tolerance", options.tol}, {"ratios", per}};
  r.explanation = r.passed ? moe::str(norms.size(), " gradient norms equal the reference's: max |ratio - 1| ",
                                      worst, norms.empty() ? "" : " (" + worstName + ")")
                           : failure;
  return r;
}

CheckResult checkGradScale(mesh::DeviceMesh& mesh, const std::vector<ParamShard>& grads,
                           const io::TensorSource& reference, const GradScaleOptions& options) {
  comm::Communicator& world = *mesh.world();
  const auto sizes = ref::meshSizes(mesh);
  const auto coords = mesh.coords();
  std::vector<const ParamShard*> chosen;
  for (const auto& g : grads)
    if (!options.expertsOnly || g.isExpert) chosen.push_back(&g);
  std::vector<double> sumSq;
  std::vector<GradNorm> norms;
  for (const ParamShard* g : chosen) {
    // Counted by one rank of each replica group: coordinate 0 on every mesh
    // dim that does not split the tensor.
    bool counts = true;
    for (size_t d = 0; d < g->placements.size(); ++d)
      if (!g->placements[d].isSharded() && coords[d] != 0) counts = false;
    sumSq.push_back(counts && g->local.numel() ? g->local.to(at::kDouble).pow(2).sum().item<double>() : 0.0);
    std::vector<ref::Placement> whole(sizes.size(), ref::Placement::replicate());
    auto full = readLocalSlice(reference, g->name, ref::computeLayout(g->globalShape, whole, sizes, coords));
    norms.push_back({g->name, 0, full.to(at::kDouble).norm().item<double>()});
  }
  sumSq = allReduceSum(world, sumSq);
  for (size_t i = 0; i < norms.size(); ++i) norms[i].run = std::sqrt(sumSq[i]);
  return describeGradScale(norms, options);
}

// ---- the registered checks ---------------------------------------------------
namespace {

// The checks of step 1 concern runs that trained at least one step.
bool trainedAStep(const CheckContext& ctx) { return ctx.steps >= 1; }

class ParamsChangedCheck : public Check {
 public:
  ParamsChangedCheck()
      : Check({"params_changed", "every trainable parameter changed in step 1 (some element on some rank)",
               CheckStage::kAfterStep1, 60, "mesh, params, step1Params",
               "exact: any element differing counts as changed"}) {}
  bool applies(const CheckContext& ctx) const override { return trainedAStep(ctx); }
  CheckResult run(const CheckContext& ctx) const override {
    const char* kName = "params_changed";
    return checkParamsChanged(*require(ctx.mesh, kName, "mesh").world(), require(ctx.params, kName, "params"),
                              require(ctx.step1Params, kName, "parameters after step 1"));
  }
};

class WrapperCommCheck : public Check {
 public:
  WrapperCommCheck()
      : Check({"wrapper_communication",
               "the data-parallel wrapper's collectives on its own groups in step 1 equal its analytical volume",
               CheckStage::kAfterStep1, 70, "mesh, wrapper, commDelta, wrapperCommExpected",
               "exact: calls and bytes per (group, op) as the wrapper declares them (ParamStore::expectedStepComm)"}) {}
  bool applies(const CheckContext& ctx) const override { return trainedAStep(ctx); }
  CheckResult run(const CheckContext& ctx) const override {
    const char* kName = "wrapper_communication";
    return checkWrapperCommCollective(*require(ctx.mesh, kName, "mesh").world(), ctx.wrapper,
                                      require(ctx.commDelta, kName, "counter delta (CommWindow)"),
                                      require(ctx.wrapperCommExpected, kName, "wrapper expectations"));
  }
};

class GradScaleCheck : public Check {
 public:
  GradScaleCheck()
      : Check({"gradient_scale",
               "each expert's step-1 gradient norm over the world equals the reference's (an ep or 2x scale fails)",
               CheckStage::kAfterStep1, 80, "mesh, dtype, step1Grads, referenceGrads",
               "the run's dtype: |ratio - 1| <= 1e-5 for fp32 (reductions in another order move a norm by ~1e-7: "
               "100x margin), 2e-2 for bf16 (implied by the bf16 parity bound ||g - r|| <= 2e-2 ||r||)"}) {}
  bool applies(const CheckContext& ctx) const override { return trainedAStep(ctx); }
  CheckResult run(const CheckContext& ctx) const override {
    const char* kName = "gradient_scale";
    GradScaleOptions o;
    o.tol = ctx.dtype == "bf16" ? 2e-2 : 1e-5;
    return checkGradScale(require(ctx.mesh, kName, "mesh"), require(ctx.step1Grads, kName, "step-1 gradients"),
                          require(ctx.referenceGrads, kName, "reference gradients"), o);
  }
};

class MemoryCheck : public Check {
 public:
  MemoryCheck()
      : Check({"memory",
               "the bytes the wrapper declares per rank equal what its placements (or flat partitions) describe, "
               "and their factor vs the replicated layout is the expected one",
               CheckStage::kAfterLastStep, 100, "mesh, memory, memoryOptions",
               "exact byte counts; the world factor vs run-plan --expect-memory-factor within 1e-9 (a ratio of exact "
               "counts; 0: reported only)"}) {}
  CheckResult run(const CheckContext& ctx) const override {
    const char* kName = "memory";
    return checkMemory(*require(ctx.mesh, kName, "mesh").world(), require(ctx.memory, kName, "memory inputs"),
                       ctx.memoryOptions);
  }
};

}  // namespace

MOE_REGISTER(Check, ParamsChangedCheck);
MOE_REGISTER(Check, WrapperCommCheck);
MOE_REGISTER(Check, GradScaleCheck);
MOE_REGISTER(Check, MemoryCheck);

}  // namespace moe::checks
