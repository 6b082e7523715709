#include "harness/checks/measured_memory_check.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "harness/checks/check_common.h"
#include "common/error.h"
#include "common/registry.h"
#include "harness/checks/check_context.h"

namespace moe::checks {
namespace {

std::string ratioText(double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4g", x);
  return buf;
}

int64_t maxPeak(const MeasuredMemory& m) {
  int64_t p = 0;
  for (int64_t v : m.stepPeaks) p = std::max(p, v);
  return p;
}

double ratioOf(double num, double den) { return den > 0 ? num / den : 0.0; }

}  // namespace

CheckResult checkMeasuredMemoryOf(const std::vector<MeasuredMemory>& ranks, const MeasuredMemoryOptions& options) {
  CheckResult r;
  r.check = "measured_memory";
  std::string failure, overNote;
  int64_t worstExcess = 0;
  int worstRank = -1;
  nlohmann::json unaccounted = nlohmann::json::array();
  for (size_t i = 0; i < ranks.size(); ++i) {
    const auto& m = ranks[i];
    const int64_t excess = m.afterLast - m.declaredBytes;
    unaccounted.push_back(excess);
    if (failure.empty() && m.afterLast < m.declaredBytes)
      failure =
          moe::str("rank ", i, ": ", m.afterLast, " bytes of tensor storage live after the last step, fewer than the ",
                   m.declaredBytes, " bytes the wrapper declares (parameters + gradients + AdamW state): the ",
                   "declaration overstates or the allocation tracker misses allocations");
    if (failure.empty() && !m.stepPeaks.empty() && m.afterLast > m.stepPeaks.back())
      failure = moe::str("rank ", i, ": ", m.afterLast, " bytes live after the last step exceed that step's peak ",
                         m.stepPeaks.back(), ": the allocation tracker's peak is inconsistent");
    if (excess > m.allowanceBytes && excess - m.allowanceBytes > worstExcess) {
      worstExcess = excess - m.allowanceBytes;
      worstRank = static_cast<int>(i);
    }
  }
  if (worstRank >= 0) {
    const auto& m = ranks[static_cast<size_t>(worstRank)];
    overNote = moe::str("rank ", worstRank, " holds ", m.afterLast, " bytes after the last step, ",
                        m.afterLast - m.declaredBytes, " more than the ", m.declaredBytes,
                        " declared (allowance ", m.allowanceBytes, ")");
    if (failure.empty() && options.assertAccounted) failure = overNote;
  }
  r.passed = failure.empty();
  r.measured = measuredMemoryJson(ranks);
  r.measured["unaccounted_bytes"] = unaccounted;
  r.measured["assert_accounted"] = options.assertAccounted;
  const double measuredRatio = r.measured["measured_ratio"].get<double>();
  const double declaredRatio = r.measured["declared_ratio"].get<double>();
  const double peakRatio = r.measured["peak_ratio"].get<double>();
  if (!r.passed) {
    r.explanation = failure;
    return r;
  }
  r.explanation = moe::str("measured after the last step / replicated declaration ", ratioText(measuredRatio),
                           " (declared ", ratioText(declaredRatio), "), peak / replicated ", ratioText(peakRatio),
                           overNote.empty() ? std::string("; every rank within its declaration + allowance")
                                            : "; " + overNote + (options.assertAccounted ? "" : " (not asserted)"));
  return r;
}

std::vector<MeasuredMemory> gatherMeasuredMemory(comm::Communicator& world, const MeasuredMemory& mine) {
  std::ostringstream os;
  os << mine.atStep1 << ' ' << mine.afterLast << ' ' << mine.declaredBytes << ' ' << mine.replicatedBytes << ' '
     << mine.allowanceBytes << ' ' << mine.stepPeaks.size();
  for (int64_t p : mine.stepPeaks) os << ' ' << p;
  std::vector<MeasuredMemory> all;
  for (const auto& s : allGatherStrings(world, os.str())) {
    std::istringstream in(s);
    MeasuredMemory m;
    size_t steps = 0;
    in >> m.atStep1 >> m.afterLast >> m.declaredBytes >> m.replicatedBytes >> m.allowanceBytes >> steps;
    m.stepPeaks.resize(steps);
    for (auto& p : m.stepPeaks) in >> p;
    MOE_ASSERT(!in.fail(), "measured memory of a rank did not parse: '", s, "'");
    all.push_back(std::move(m));
  }
  return all;
}

nlohmann::json measuredMemoryJson(const std::vector<MeasuredMemory>& ranks) {
  double after = 0, declared = 0, replicated = 0, peaks = 0;
  nlohmann::json perRank = nlohmann::json::array();
  for (size_t i = 0; i < ranks.size(); ++i) {
    const auto& m = ranks[i];
    after += static_cast<double>(m.afterLast);
    declared += static_cast<double>(m.declaredBytes);
    replicated += static_cast<double>(m.replicatedBytes);
    peaks += static_cast<double>(maxPeak(m));
    perRank.push_back({{"rank", i},
                       {"at_step1_bytes", m.atStep1},
                       {"step_peak_bytes", m.stepPeaks},
                       {"peak_bytes", maxPeak(m)},
                       {"after_last_step_bytes", m.afterLast},
                       {"declared_bytes", m.declaredBytes},
                       {"replicated_bytes", m.replicatedBytes},
                       {"allowance_bytes", m.allowanceBytes}});
  }
  return {{"per_rank", perRank},
          {"world_after_last_step_bytes", after},
          {"world_declared_bytes", declared},
          {"world_replicated_bytes", replicated},
          {"world_peak_bytes", peaks},
          {"measured_ratio", ratioOf(after, replicated)},
          {"declared_ratio", ratioOf(declared, replicated)},
          {"peak_ratio", ratioOf(peaks, replicated)}};
}

namespace {

class MeasuredMemoryCheck : public Check {
 public:
  MeasuredMemoryCheck()
      : Check({"measured_memory",
               "what the allocation tracker counts per rank after the last step covers the wrapper's declaration "
               "and exceeds it by at most the derived allowance",
               CheckStage::kAfterLastStep, 110, "measuredMemory, measuredMemoryOptions",
               "exact byte counts; the allowance beyond the declaration is derived from the placements "
               "(run_plan_memory.h); run-plan --allow-unaccounted-memory only reports the excess"}) {}
  CheckResult run(const CheckContext& ctx) const override {
    return checkMeasuredMemoryOf(require(ctx.measuredMemory, "measured_memory", "measured memory"),
                                 ctx.measuredMemoryOptions);
  }
};

}  // namespace

MOE_REGISTER(Check, MeasuredMemoryCheck);

}  // namespace moe::checks
