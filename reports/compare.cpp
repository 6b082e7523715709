#include "reports/compare.h"

#include <map>

#include "common/error.h"
#include "reports/printer.h"

namespace moe::reports {
namespace {

// Higher is worse.
int badness(Status s) {
  switch (s) {
    case Status::kPass: return 0;
    case Status::kSkip: return 1;
    case Status::kFail: return 2;
    case Status::kError: return 3;
  }
  return 3;
}

}  // namespace

std::vector<RunChange> compareReports(const Report& oldReport, const Report& newReport, const CompareOptions& o) {
  MOE_ASSERT(o.factor > 1, "compare factor must be > 1, got ", o.factor);
  std::map<std::string, const RunResult*> before;
  for (const auto& r : oldReport.runs) before[r.id] = &r;
  std::vector<RunChange> out;
  std::map<std::string, bool> seen;
  for (const auto& r : newReport.runs) {
    seen[r.id] = true;
    auto it = before.find(r.id);
    if (it == before.end()) {
      out.push_back({r.id, "new run (" + statusName(r.status) + ")", r.status == Status::kFail || r.status == Status::kError});
      continue;
    }
    const RunResult& a = *it->second;
    if (a.status != r.status)
      out.push_back({r.id, "status " + statusName(a.status) + " -> " + statusName(r.status),
                     badness(r.status) > badness(a.status)});
    const auto ma = margins(a), mb = margins(r);
    for (const auto& [k, vb] : mb) {
      auto ka = ma.find(k);
      if (ka == ma.end()) continue;
      const double va = ka->second;
      if (va < o.minMargin && vb < o.minMargin) continue;
      const double lo = std::max(std::min(va, vb), 1e-300);
      const double ratio = std::max(va, vb) / lo;
      if (ratio >= o.factor)
        out.push_back({r.id,
                       moe::str(k, " margin ", formatDouble(va), " -> ", formatDouble(vb), " (x", formatDouble(vb / std::max(va, 1e-300)), ")"),
                       vb > va});
    }
  }
  for (const auto& r : oldReport.runs)
    if (!seen.count(r.id)) out.push_back({r.id, "missing in the new report (was " + statusName(r.status) + ")", false});
  return out;
}

}  // namespace moe::reports
