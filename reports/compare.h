#pragma once
// Comparing two reports (the nightly trend): which runs changed result or
// margin between OLD and NEW.
//
// A run is flagged when
//  - its status changed (a regression when it got worse: pass -> fail/error),
//  - it is only in one of the reports,
//  - one of its margins (report.h margins(): measured / tolerance) changed
//    by at least `factor` (a regression when it grew). Margins below
//    `minMargin` in both reports are not compared: a loss difference of one
//    float ulp against one of two ulps is not a trend.
#include <string>
#include <vector>

#include "reports/report.h"

namespace moe::reports {

struct CompareOptions {
  double factor = 2.0;
  double minMargin = 0.01;
};

struct RunChange {
  std::string id;
  std::string what;  // "status pass -> fail", "loss margin 0.2 -> 0.41 (x2.05)", "new run", "missing"
  bool regression = false;
};

std::vector<RunChange> compareReports(const Report& oldReport, const Report& newReport,
                                      const CompareOptions& options = {});

}  // namespace moe::reports
