#pragma once
// Trends over N reports (the nightly history): per run, its status, margins
// (report.h margins(): measured / tolerance) and wall time in every report,
// oldest first, with regressions of the newest report flagged.
//
// A run is flagged as a regression in the newest report when
//  - compareReports(previous report that has the run, newest) calls it a
//    regression (status got worse, a margin grew by >= margin factor, a new
//    run that fails): compare.h, same options;
//  - or its wall time grew by at least `timeFactor` against the median of
//    its earlier times and by at least `minSeconds` (one noisy run on a
//    shared 2-core machine is often 1.5x; a real slowdown is both large and
//    persistent against the median);
//  - or it is missing from the newest report while an earlier one had it.
// Reports are ordered by their `created` time (ISO 8601, so lexicographic);
// ties keep the order given.
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "reports/compare.h"
#include "reports/report.h"

namespace moe::reports {

struct TrendOptions {
  CompareOptions compare;   // margin factor and floor, as `compare`
  double timeFactor = 1.5;  // flag newest time >= factor x median of earlier times
  double minSeconds = 1.0;  // ... and at least this many seconds slower
};

// One run in one report; absent when the report does not have the run.
struct TrendPoint {
  Status status = Status::kError;
  double seconds = 0;
  std::optional<double> worstMargin;  // max over margins(); none without parity
  std::map<std::string, double> margins;
};

struct RunTrend {
  std::string id;
  std::vector<std::optional<TrendPoint>> points;  // one per report, oldest first
  std::vector<std::string> flags;                 // why it is a regression; empty if not
  bool regression() const { return !flags.empty(); }
};

struct Trend {
  std::vector<std::string> created;  // per report, oldest first
  std::vector<std::string> sources;  // per report: the path it was read from
  std::vector<double> suiteSeconds;  // per report
  std::vector<Totals> totals;        // per report
  std::vector<RunTrend> runs;        // the newest report's order, then runs only older reports have
  int regressions() const;
};

// reports: with their paths (same order). HarnessError for fewer than 2.
Trend buildTrend(std::vector<Report> reports, std::vector<std::string> sources, const TrendOptions& options = {});

// The trend as a Markdown table (one row per run: status, worst margin and
// time per report, flags) and as a self-contained HTML page with one inline
// SVG chart per run (worst margin and time over the reports).
void printTrendMarkdown(const Trend& trend, std::ostream& os);
void printTrendHtml(const Trend& trend, std::ostream& os);

}  // namespace moe::reports
