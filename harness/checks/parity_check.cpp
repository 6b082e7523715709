#include "harness/checks/parity_check.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>

#include "harness/checks/check_common.h"
#include "common/error.h"
#include "common/json_number.h"
#include "common/registry.h"
#include "reference/placement/dist_tensor.h"

namespace moe::checks {

ParityTolerance ParityTolerance::forDtype(const std::string& dtype) {
  ParityTolerance t;
  if (dtype == "fp32") return t;
  if (dtype == "bf16") {
    t.lossAbs = 5e-3;
    t.metric = TensorMetric::kRelNorm;
    return t;
  }
  moe::fail("parity: unknown dtype '", dtype, "' (known: fp32, bf16)");
}

std::string formatNumber(double x) {
  if (!std::isfinite(x)) return nonFiniteName(x);  // "nan", never printf's "-nan"
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", x);
  return buf;
}

std::string ParityTolerance::describe() const {
  if (metric == TensorMetric::kAllClose)
    return moe::str("allclose(rtol ", formatNumber(rtol), ", atol ", formatNumber(atol), ")");
  return moe::str("relative norm error <= ", formatNumber(relNorm));
}

namespace {
constexpr double kTiny = 1e-30;

std::string ratioString(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", r);
  return buf;
}

std::vector<int64_t> unflatten(int64_t flat, const std::vector<int64_t>& shape) {
  std::vector<int64_t> idx(shape.size());
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return idx;
}
}  // namespace

at::Tensor adamwAllowance(const at::Tensor& refGrad, const ParityTolerance& tol, const ParityOptimizer& optimizer,
                          int64_t steps, double clipFactor) {
  at::Tensor g = refGrad.detach().to(at::kCPU, at::kDouble);
  if (optimizer.lr <= 0 || steps <= 0 || g.numel() == 0) return at::zeros_like(g);
  at::Tensor eta;
  if (tol.metric == TensorMetric::kAllClose) {
    eta = tol.atol + tol.rtol * g.abs();
  } else {
    const double rms = std::sqrt(g.pow(2).mean().item<double>());
    eta = at::full_like(g, tol.relNorm * rms);
  }
  const double eps = optimizer.eps;
  auto u = [eps](const at::Tensor& x) { return x / (x.abs() + eps); };
  const at::Tensor cg = clipFactor * g, ce = clipFactor * eta;
  const at::Tensor w = at::maximum(u(cg + ce) - u(cg), u(cg) - u(cg - ce));
  return static_cast<double>(steps) * optimizer.lr * w;
}

AdamwAllowanceBasis adamwAllowanceBasis(const io::TensorSource* globalStep1Grads, double globalStep1GradNorm,
                                        const ParityOptimizer& optimizer) {
  AdamwAllowanceBasis b;
  b.grads = globalStep1Grads;
  if (optimizer.maxGradNorm > 0 && globalStep1GradNorm > optimizer.maxGradNorm)
    b.clipFactor = optimizer.maxGradNorm / globalStep1GradNorm;
  return b;
}

TensorDiff compareTensor(const at::Tensor& run, const at::Tensor& ref, const ParityTolerance& tol,
                         const ref::LocalLayout* layout, const at::Tensor* allowance) {
  MOE_ASSERT(run.sizes() == ref.sizes(), "shapes ", shapeString(run.sizes()), " vs ", shapeString(ref.sizes()));
  TensorDiff d;
  if (run.numel() == 0) return d;
  // Block by block in double: whole-tensor double copies (run, reference,
  // |diff|, bound, violation, ...) were 7 x 8 B per element, 5.6 GB of
  // transients for one rank's 100 M-element expert tensor at realistic width,
  // and most of a 4-rank run's time. Maxima keep the first index and let
  // NaN win, as max/argmax do; norms sum squares in double.
  const at::Tensor ra = run.detach().to(at::kCPU).reshape({-1});
  const at::Tensor rb = ref.detach().to(at::kCPU).reshape({-1});
  at::Tensor rx;
  if (allowance && allowance->defined()) {
    MOE_ASSERT(allowance->numel() == run.numel(), "allowance of ", allowance->numel(), " elements for ", run.numel());
    rx = allowance->detach().to(at::kCPU).reshape({-1});
  }
  constexpr int64_t kBlock = int64_t{1} << 16;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  double maxAbs = 0, diffSq = 0, runSq = 0, refSq = 0, extraSq = 0;
  double best = -1;  // the worst violation (allclose) or |diff| (relative norm) so far
  int64_t worst = 0;
  auto better = [](double v, double than) { return (std::isnan(v) && !std::isnan(than)) || v > than; };
  for (int64_t off = 0; off < ra.numel(); off += kBlock) {
    const int64_t n = std::min(kBlock, ra.numel() - off);
    const at::Tensor a = ra.narrow(0, off, n).to(at::kDouble), b = rb.narrow(0, off, n).to(at::kDouble);
    const at::Tensor diff = (a - b).abs();
    const double m = diff.max().item<double>();
    if (std::isnan(m) || std::isnan(maxAbs)) maxAbs = nan;
    else maxAbs = std::max(maxAbs, m);
    diffSq += diff.pow(2).sum().item<double>();
    runSq += a.pow(2).sum().item<double>();
    refSq += b.pow(2).sum().item<double>();
    at::Tensor extra;
    if (rx.defined()) {
      extra = rx.narrow(0, off, n).to(at::kDouble);
      extraSq += extra.pow(2).sum().item<double>();
    }
    at::Tensor score;
    if (tol.metric == TensorMetric::kAllClose) {
      at::Tensor bound = tol.atol + tol.rtol * b.abs();
      if (extra.defined()) bound = bound + extra;
      score = diff / bound;
      // NaN anywhere is the worst possible violation.
      score = at::where(score.isnan(), at::full_like(score, std::numeric_limits<double>::infinity()), score);
    } else {
      score = diff;
    }
    const int64_t k = score.argmax().item<int64_t>();
    if (const double v = score[k].item<double>(); better(v, best)) {
      best = v;
      worst = off + k;
    }
  }
  d.maxAbsDiff = maxAbs;
  const double diffNorm = std::sqrt(diffSq), runNorm = std::sqrt(runSq), refNorm = std::sqrt(refSq);
  d.relNormError = diffNorm / std::max(refNorm, kTiny);
  d.normRatio = refNorm > 0 ? runNorm / refNorm : (runNorm > 0 ? std::numeric_limits<double>::infinity() : 1.0);
  if (tol.metric == TensorMetric::kAllClose) {
    d.score = best;
  } else {
    const double bound = tol.relNorm * refNorm + (rx.defined() ? std::sqrt(extraSq) : 0.0);
    d.score = bound > 0 ? diffNorm / bound : (diffNorm > 0 ? 1e300 : 0);
  }
  if (std::isnan(d.relNormError) || std::isnan(d.maxAbsDiff)) d.score = std::numeric_limits<double>::infinity();
  d.ok = d.score <= 1.0;
  if (rx.defined() && tol.metric == TensorMetric::kAllClose) d.allowanceAtWorst = rx[worst].item<double>();
  const at::Tensor a = ra, b = rb;
  std::vector<int64_t> local = unflatten(worst, run.sizes().vec());
  d.worstAt = moe::str(layout ? "global " : "local ", shapeString(layout ? layout->globalIndex(local) : local),
                       " (run ", formatNumber(a[worst].item<double>()), " vs reference ",
                       formatNumber(b[worst].item<double>()), ")");
  return d;
}

std::string describeTensorFailure(int rank, const std::string& what, const std::string& name,
                                  const TensorDiff& d, const ParityTolerance& tol) {
  std::string norms = moe::str("relative norm error ", formatNumber(d.relNormError), " (run/reference norm ratio ",
                               ratioString(d.normRatio), ")");
  if (tol.metric == TensorMetric::kRelNorm)
    return moe::str("rank ", rank, ": ", what, " of ", name, ": ", norms, " exceeds ", formatNumber(tol.relNorm),
                    "; max |diff| ", formatNumber(d.maxAbsDiff), " at ", d.worstAt);
  return moe::str("rank ", rank, ": ", what, " of ", name, ": max |diff| ", formatNumber(d.maxAbsDiff), " at ",
                  d.worstAt, " exceeds ", tol.describe(),
                  d.allowanceAtWorst > 0 ? moe::str(" + AdamW allowance ", formatNumber(d.allowanceAtWorst))
                                         : std::string(),
                  "; ", norms);
}

std::string mixedExpertsDiagnosis(const at::Tensor& run, const ref::LocalLayout& layout,
                                  const io::TensorSource& reference, const std::string& name,
                                  const ParityTolerance& tol) {
  if (run.dim() < 1 || layout.globalShape.empty() || run.size(0) == 0) return "";
  const int64_t numExperts = layout.globalShape[0];
  // The reference's row of expert e, restricted to this rank's other dims.
  auto expertRow = [&](int64_t e) {
    ref::LocalLayout l = layout;
    l.ranges[0] = {ref::IndexRange{e, 1}};
    l.localShape[0] = 1;
    l.offsets[0] = e;
    return readLocalSlice(reference, name, l).squeeze(0).to(at::kDouble);
  };
  std::vector<int64_t> globalRows;
  for (const auto& r : layout.ranges[0])
    for (int64_t i = r.start; i < r.start + r.length; ++i) globalRows.push_back(i);
  for (int64_t i = 0; i < run.size(0); ++i) {
    const int64_t g = globalRows[i];
    const auto mine = run[i].detach().to(at::kDouble);
    const auto want = expertRow(g);
    if (compareTensor(mine, want, tol).ok) continue;
    // The first failing row decides.
    for (int64_t h = 0; h < numExperts; ++h) {
      if (h == g) continue;
      const auto sum = want + expertRow(h);
      if (!compareTensor(mine, sum, tol).ok) continue;
      const int64_t flat = (mine - want).abs().reshape({-1}).argmax().item<int64_t>();
      return moe::str("; its expert ", g, " holds the reference's experts ", g, " + ", h,
                      " summed (e.g. run ", formatNumber(mine.reshape({-1})[flat].item<double>()), " vs reference ",
                      formatNumber(want.reshape({-1})[flat].item<double>()), " + ",
                      formatNumber((sum - want).reshape({-1})[flat].item<double>()),
                      "): values of different experts were added, as by a reduction over ranks that hold "
                      "different experts");
    }
    return "";
  }
  return "";
}

namespace {

struct Worst {
  std::string name;
  TensorDiff diff;
  bool any = false;
};

nlohmann::json worstJson(const Worst& w, int rank) {
  if (!w.any) return nullptr;
  return {{"param", w.name},
          {"rank", rank},
          {"score", w.diff.score},
          {"max_abs_diff", w.diff.maxAbsDiff},
          {"rel_norm_error", w.diff.relNormError},
          {"norm_ratio", w.diff.normRatio}};
}

// Whole-tensor sums for the relative-norm metric: per "what\x1fname", this
// rank's share of ||run - ref||^2, ||ref||^2 and ||run||^2. Each local piece
// is weighted by 1 / (number of ranks holding the same elements), the
// product of the mesh dims it is not sharded on, so the world sum counts
// every element of the global tensor once.
// The fourth entry: this rank's share of ||AdamW allowance||^2 (final
// parameters only; adamwAllowance).
using NormSums = std::map<std::string, std::array<double, 4>>;

// Where the AdamW allowance of final parameters comes from: the reference's
// step-1 gradients, read through each parameter's own layout.
struct AllowanceSource {
  const io::TensorSource* referenceGrads = nullptr;
  ParityOptimizer optimizer;
  int64_t steps = 0;
  double clipFactor = 1;
};

// Compares every shard with the matching slice of its reference tensor.
// Returns the per-quantity maxima and the worst parameter. With `sums`, the
// relative-norm metric is left to the whole tensor (the caller sums the
// shares over the world): a local piece does not fail on it here.
nlohmann::json compareShards(const ParityInputs& in, const std::vector<ParamShard>& shards,
                             const io::TensorSource& reference, const std::string& what,
                             const ParityTolerance& tol, std::string& failure, NormSums* sums,
                             const AllowanceSource* allowanceSource = nullptr) {
  Worst worst;
  double maxAbs = 0, maxRel = 0;
  auto fail = [&](const std::string& m) {
    if (failure.empty()) failure = m;
  };
  for (const ParamShard& p : shards) {
    if (!reference.has(p.name)) {
      fail(moe::str("rank ", in.rank, ": ", what, " of ", p.name, ": the reference ", reference.where(),
                    " has no such tensor"));
      continue;
    }
    if (reference.shape(p.name) != p.globalShape) {
      fail(moe::str("rank ", in.rank, ": ", what, " of ", p.name, ": global shape ", shapeString(p.globalShape),
                    " vs reference ", shapeString(reference.shape(p.name))));
      continue;
    }
    if (std::any_of(p.placements.begin(), p.placements.end(), [](const ref::Placement& q) { return q.isPartial(); })) {
      fail(moe::str("rank ", in.rank, ": ", what, " of ", p.name, " is still Partial (",
                    ref::toString(p.placements), "); reduce it before comparing"));
      continue;
    }
    ref::LocalLayout layout = ref::computeLayout(p.globalShape, p.placements, in.meshSizes, in.meshCoords);
    if (p.local.sizes().vec() != layout.localShape) {
      fail(moe::str("rank ", in.rank, ": ", what, " of ", p.name, " local shape ", shapeString(p.local.sizes()),
                    " vs expected ", shapeString(layout.localShape), " (placements ", ref::toString(p.placements),
                    ")"));
      continue;
    }
    at::Tensor expected = readLocalSlice(reference, p.name, layout);
    at::Tensor allowance;
    if (allowanceSource && allowanceSource->referenceGrads && allowanceSource->referenceGrads->has(p.name))
      allowance = adamwAllowance(readLocalSlice(*allowanceSource->referenceGrads, p.name, layout), tol,
                                 allowanceSource->optimizer, allowanceSource->steps, allowanceSource->clipFactor);
    TensorDiff d = compareTensor(p.local, expected, tol, &layout, allowance.defined() ? &allowance : nullptr);
    maxAbs = std::max(maxAbs, d.maxAbsDiff);
    maxRel = std::max(maxRel, d.relNormError);
    if (!worst.any || d.score > worst.diff.score) worst = {p.name, d, true};
    const bool wholeTensor = sums && tol.metric == TensorMetric::kRelNorm;
    if (wholeTensor) {
      double replicas = 1;
      for (size_t i = 0; i < p.placements.size() && i < in.meshSizes.size(); ++i)
        if (!p.placements[i].isSharded()) replicas *= in.meshSizes[i];
      auto a = p.local.detach().to(at::kDouble), b = expected.to(at::kDouble);
      auto& s = (*sums)[what + '\x1f' + p.name];
      s[0] += (a - b).pow(2).sum().item<double>() / replicas;
      s[1] += b.pow(2).sum().item<double>() / replicas;
      s[2] += a.pow(2).sum().item<double>() / replicas;
      if (allowance.defined()) s[3] += allowance.pow(2).sum().item<double>() / replicas;
      // NaN must still fail even if the sums were to hide it.
      if (std::isnan(d.maxAbsDiff)) fail(describeTensorFailure(in.rank, what, p.name, d, tol));
    } else if (!d.ok) {
      fail(describeTensorFailure(in.rank, what, p.name, d, tol) +
           (p.isExpert && failure.empty() ? mixedExpertsDiagnosis(p.local, layout, reference, p.name, tol) : ""));
    }
  }
  return {{"tensors", shards.size()},
          {"max_abs_diff", maxAbs},
          {"max_rel_norm_error", maxRel},
          {"worst", worstJson(worst, in.rank)}};
}

}  // namespace

namespace {
CheckResult checkParityImpl(const ParityInputs& in, const ParityCheckOptions& options, NormSums* sums) {
  const ParityTolerance tol = options.resolved();
  const auto& run = require(in.runSteps, "parity", "run step records");
  const auto& ref = require(in.referenceSteps, "parity", "reference step records");
  // The first failure of each kind. The explanation reports the most specific
  // one: a loss difference is the forward's own effect (gradients then differ
  // as a consequence); with the loss right, a gradient names the parameter
  // and its run/reference norm ratio (a scale bug shows as 0.500 or 2.000),
  // which the grad norm alone would blur; a grad norm wrong while every
  // gradient is right points at the norm itself (e.g. counted twice); final
  // parameters wrong with everything else right point at the update.
  std::string stepsFailure, lossFailure, gradFailure, normFailure, paramFailure;
  auto failInto = [](std::string& slot, const std::string& m) {
    if (slot.empty()) slot = m;
  };
  auto fail = [&](const std::string& m) { failInto(lossFailure, m); };
  double maxLoss = 0, maxCe = 0, maxAux = 0, maxGradNorm = 0;
  if (run.size() != ref.size())
    failInto(stepsFailure,
             moe::str("rank ", in.rank, ": the run has ", run.size(), " steps vs ", ref.size(), " in the reference"));
  for (size_t i = 0; i < std::min(run.size(), ref.size()); ++i) {
    const StepRecord& a = run[i];
    const StepRecord& b = ref[i];
    struct Q {
      const char* name;
      double run, ref;
      double* max;
    } qs[] = {{"loss", a.loss, b.loss, &maxLoss}, {"ce", a.ce, b.ce, &maxCe}, {"aux", a.aux, b.aux, &maxAux}};
    for (const Q& q : qs) {
      double d = std::abs(q.run - q.ref);
      if (std::isnan(d)) d = std::numeric_limits<double>::infinity();
      *q.max = std::max(*q.max, d);
      if (d > tol.lossAbs)
        fail(moe::str("rank ", in.rank, ": step ", a.step, " ", q.name, " ", q.run, " vs reference ", q.ref,
                      " (|diff| ", formatNumber(d), " exceeds ", formatNumber(tol.lossAbs), ")"));
    }
    double gd = std::abs(a.gradNorm - b.gradNorm);
    double rel = gd / std::max(std::abs(b.gradNorm), kTiny);
    maxGradNorm = std::max(maxGradNorm, std::isnan(rel) ? std::numeric_limits<double>::infinity() : rel);
    bool gnOk = tol.metric == TensorMetric::kAllClose ? gd <= tol.atol + tol.rtol * std::abs(b.gradNorm)
                                                      : rel <= tol.relNorm;
    if (!gnOk)
      failInto(normFailure, moe::str("rank ", in.rank, ": step ", a.step, " grad norm ", a.gradNorm, " vs reference ",
                                     b.gradNorm, " (relative diff ", formatNumber(rel), ", ratio ",
                                     ratioString(a.gradNorm / b.gradNorm), ") exceeds ", tol.describe()));
  }
  CheckResult r;
  r.check = "parity";
  r.measured = {{"steps", run.size()},
                {"loss_max_abs_diff", maxLoss},
                {"ce_max_abs_diff", maxCe},
                {"aux_max_abs_diff", maxAux},
                {"grad_norm_max_rel_diff", maxGradNorm},
                {"tolerance",
                 {{"dtype", options.dtype},
                  {"loss_abs", tol.lossAbs},
                  {"tensors", tol.describe()}}}};
  if (in.step1Grads)
    r.measured["grads"] = compareShards(in, *in.step1Grads, require(in.referenceGrads, "parity", "reference gradients"),
                                        "step-1 gradient", tol, gradFailure, sums);
  if (in.finalParams) {
    // Final parameters get the AdamW allowance (adamwAllowance) when the
    // optimizer and the reference's step-1 gradients are known.
    AllowanceSource allowance;
    if (options.optimizer.lr > 0 && in.referenceGrads) {
      const bool resumed = in.allowanceGrads != nullptr;
      const AdamwAllowanceBasis basis = adamwAllowanceBasis(
          resumed ? in.allowanceGrads : in.referenceGrads,
          resumed ? in.allowanceGradNorm : (ref.empty() ? 0.0 : ref.front().gradNorm), options.optimizer);
      allowance.referenceGrads = basis.grads;
      allowance.optimizer = options.optimizer;
      // Every optimizer step from the initial parameters counts: a resumed
      // run's final parameters are k + n steps away, not n.
      allowance.steps = run.empty() ? 0 : run.back().step;
      allowance.clipFactor = basis.clipFactor;
    }
    r.measured["params"] = compareShards(in, *in.finalParams,
                                         require(in.referenceParams, "parity", "reference parameters"),
                                         moe::str("parameter after step ", run.size()), tol, paramFailure, sums,
                                         allowance.referenceGrads ? &allowance : nullptr);
    if (allowance.referenceGrads)
      r.measured["params"]["adamw_allowance"] = {{"lr", allowance.optimizer.lr},
                                                 {"eps", allowance.optimizer.eps},
                                                 {"steps", allowance.steps},
                                                 {"clip_factor", allowance.clipFactor}};
  }
  std::string failure;
  std::vector<std::string> others;
  const std::pair<const char*, const std::string*> kinds[] = {{"step count", &stepsFailure},
                                                              {"loss", &lossFailure},
                                                              {"step-1 gradients", &gradFailure},
                                                              {"grad norm", &normFailure},
                                                              {"final parameters", &paramFailure}};
  for (const auto& [kind, f] : kinds) {
    if (f->empty()) continue;
    if (failure.empty()) failure = *f;
    else others.push_back(kind);
  }
  if (!others.empty()) {
    failure += " (also off: ";
    for (size_t i = 0; i < others.size(); ++i) failure += (i ? ", " : "") + others[i];
    failure += ")";
  }
  r.passed = failure.empty();
  r.explanation = r.passed ? moe::str("max |diff| loss ", formatNumber(maxLoss), ", grad norm relative ",
                                      formatNumber(maxGradNorm), " over ", run.size(), " steps within ",
                                      tol.describe())
                           : failure;
  return r;
}
}  // namespace

CheckResult checkParity(const ParityInputs& in, const ParityCheckOptions& options) {
  return checkParityImpl(in, options, nullptr);
}

namespace {
// Keeps the element-wise maximum of numbers and the worst-scoring "worst".
// A measured number as exchanged between ranks: a JSON number or a
// non-finite one's "nan" / "inf" / "-inf" (common/json_number.h).
bool isNumberField(const nlohmann::json& j) {
  if (j.is_number()) return true;
  if (!j.is_string()) return false;
  const auto& s = j.get_ref<const std::string&>();
  return s == "nan" || s == "inf" || s == "-inf";
}
// The larger of two measured numbers; NaN is larger than anything (it must
// never hide behind a finite maximum).
double maxNaN(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::quiet_NaN();
  return std::max(a, b);
}

void mergeMax(nlohmann::json& into, const nlohmann::json& other) {
  for (auto it = other.begin(); it != other.end(); ++it) {
    const std::string& k = it.key();
    if (!into.contains(k)) {
      into[k] = *it;
    } else if (k == "worst") {
      if (into[k].is_null()) {
        into[k] = *it;
      } else if (!it->is_null()) {
        const double mine = numberOf(into[k]["score"], "score"), theirs = numberOf((*it)["score"], "score");
        if ((std::isnan(theirs) && !std::isnan(mine)) || theirs > mine) into[k] = *it;
      }
    } else if (it->is_object()) {
      mergeMax(into[k], *it);
    } else if (isNumberField(*it) && isNumberField(into[k])) {
      into[k] = jsonNumber(maxNaN(numberOf(into[k], k), numberOf(*it, k)));
    }
  }
}
}  // namespace

CheckResult checkParityCollective(comm::Communicator& world, const ParityInputs& in,
                                  const ParityCheckOptions& options) {
  CheckResult local;
  std::string error;
  NormSums sums;
  try {
    local = checkParityImpl(in, options, &sums);
  } catch (const HarnessError& e) {
    // Still take part in the agreement, so the other ranks do not hang.
    error = moe::str("rank ", in.rank, ": ", e.what());
  }
  // The relative-norm metric over whole tensors: sum every rank's shares.
  std::string wholeFailure;
  double maxWhole = 0;
  {
    nlohmann::json mine = nlohmann::json::object();
    for (const auto& [key, s] : sums) mine[key] = {s[0], s[1], s[2], s[3]};
    NormSums total;
    // Non-finite sums travel as "nan" / "inf" (a plain dump() would write
    // null, which no rank could read back).
    for (const std::string& part : allGatherStrings(world, dumpJson(mine))) {
      const auto j = nlohmann::json::parse(part);
      for (auto it = j.begin(); it != j.end(); ++it)
        for (size_t i = 0; i < 4; ++i) total[it.key()][i] += numberOf(it.value().at(i), it.key());
    }
    const ParityTolerance tol = options.resolved();
    double worstScore = -1;
    for (const auto& [key, s] : total) {
      const double rel = std::sqrt(s[0]) / std::max(std::sqrt(s[1]), kTiny);
      const double ratio =
          s[1] > 0 ? std::sqrt(s[2] / s[1]) : (s[2] > 0 ? std::numeric_limits<double>::infinity() : 1.0);
      maxWhole = std::max(maxWhole, std::isnan(rel) ? std::numeric_limits<double>::infinity() : rel);
      // ||run - ref|| <= relNorm ||ref|| + ||AdamW allowance|| (final
      // parameters; the allowance is 0 elsewhere), as a relative bound.
      const double allowed = tol.relNorm + std::sqrt(s[3]) / std::max(std::sqrt(s[1]), kTiny);
      if ((rel > allowed || std::isnan(rel)) && rel > worstScore) {
        worstScore = rel;
        const auto sep = key.find('\x1f');
        wholeFailure = moe::str(key.substr(0, sep), " of ", key.substr(sep + 1), ": relative norm error ",
                                formatNumber(rel), " over the whole tensor (run/reference norm ratio ",
                                ratioString(ratio), ") exceeds ", formatNumber(tol.relNorm),
                                s[3] > 0 ? moe::str(" + AdamW allowance ", formatNumber(allowed - tol.relNorm))
                                         : std::string());
      }
    }
  }
  std::string mineFailure = error.empty() ? (local.passed ? "" : local.explanation) : error;
  // Every rank computed the same whole-tensor verdict; rank 0 reports it.
  if (mineFailure.empty() && !wholeFailure.empty() && world.rank() == 0) mineFailure = wholeFailure;
  Verdict v = agreeVerdict(world, mineFailure);
  nlohmann::json merged = local.measured;
  for (const std::string& s : allGatherStrings(world, dumpJson(local.measured))) {
    if (s == "null" || s.empty()) continue;
    mergeMax(merged, nlohmann::json::parse(s));
  }
  CheckResult r;
  r.check = "parity";
  r.passed = !v.failed;
  r.measured = merged;
  r.measured["failing_ranks"] = v.failingRanks;
  if (options.resolved().metric == TensorMetric::kRelNorm) r.measured["max_whole_tensor_rel_norm_error"] = maxWhole;
  r.explanation = v.failed ? v.explanation : local.explanation;
  if (!v.failed) {
    r.explanation = moe::str(
        "max |diff| loss ", formatNumber(numberOr(merged, "loss_max_abs_diff", 0.0)), "; worst gradient ",
        merged.contains("grads") && !merged["grads"]["worst"].is_null()
            ? moe::str(merged["grads"]["worst"]["param"].get<std::string>(), " (relative norm error ",
                       formatNumber(numberOf(merged["grads"]["worst"]["rel_norm_error"], "rel_norm_error")), ")")
            : std::string("-"),
        "; within ", options.resolved().describe(), " on ", world.size(), " ranks");
  }
  return r;
}

ParityInputs parityInputsOf(const CheckContext& ctx) {
  mesh::DeviceMesh& mesh = require(ctx.mesh, "parity", "mesh");
  ParityInputs in;
  in.rank = mesh.world()->globalRanks()[mesh.world()->rank()];
  in.meshSizes = ref::meshSizes(mesh);
  in.meshCoords = mesh.coords();
  in.runSteps = ctx.runSteps;
  in.referenceSteps = ctx.referenceSteps;
  in.step1Grads = ctx.step1Grads;
  in.referenceGrads = ctx.referenceGrads;
  in.finalParams = ctx.finalParams;
  in.referenceParams = ctx.referenceParams;
  in.allowanceGrads = ctx.referenceGlobalStep1Grads;
  in.allowanceGradNorm = ctx.referenceGlobalStep1GradNorm;
  return in;
}

CheckResult ParityCheck::run(const CheckContext& ctx) const {
  return checkParityCollective(*require(ctx.mesh, "parity", "mesh").world(), parityInputsOf(ctx), ctx.parity);
}

MOE_REGISTER(Check, ParityCheck);

}  // namespace moe::checks
