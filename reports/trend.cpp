#include "reports/trend.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <ostream>
#include <sstream>

#include "common/error.h"
#include "reports/printer.h"

namespace moe::reports {
namespace {

double median(std::vector<double> v) {
  MOE_ASSERT(!v.empty(), "median of nothing");
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

TrendPoint pointOf(const RunResult& r) {
  TrendPoint p;
  p.status = r.status;
  p.seconds = r.seconds;
  p.margins = margins(r);
  for (const auto& [k, v] : p.margins) p.worstMargin = std::max(p.worstMargin.value_or(v), v);
  return p;
}

// A report holding only `r`, so compareReports judges one run.
Report single(const RunResult& r) {
  Report x;
  x.runs.push_back(r);
  return x;
}

}  // namespace

int Trend::regressions() const {
  int n = 0;
  for (const auto& r : runs) n += r.regression() ? 1 : 0;
  return n;
}

Trend buildTrend(std::vector<Report> reports, std::vector<std::string> sources, const TrendOptions& o) {
  MOE_ASSERT(reports.size() == sources.size(), reports.size(), " reports, ", sources.size(), " sources");
  if (reports.size() < 2) fail("trend: needs at least 2 reports, got ", reports.size());
  if (!(o.timeFactor > 1)) fail("trend: --time-factor must be > 1, got ", o.timeFactor);
  // Oldest first by creation time; equal times keep the order given.
  std::vector<size_t> order(reports.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return reports[a].created < reports[b].created; });
  Trend t;
  std::vector<const Report*> sorted;
  for (size_t i : order) {
    sorted.push_back(&reports[i]);
    t.created.push_back(reports[i].created);
    t.sources.push_back(sources[i]);
    t.suiteSeconds.push_back(reports[i].seconds);
    t.totals.push_back(reports[i].totals());
  }
  const size_t n = sorted.size();
  // Runs: the newest report's order first, then those only older ones have
  // (newest first among them).
  std::vector<std::string> ids;
  std::map<std::string, size_t> index;
  for (size_t k = n; k-- > 0;)
    for (const auto& r : sorted[k]->runs)
      if (index.emplace(r.id, ids.size()).second) ids.push_back(r.id);
  std::vector<std::vector<const RunResult*>> byRun(ids.size(), std::vector<const RunResult*>(n, nullptr));
  for (size_t k = 0; k < n; ++k)
    for (const auto& r : sorted[k]->runs) byRun[index[r.id]][k] = &r;

  for (size_t i = 0; i < ids.size(); ++i) {
    RunTrend rt;
    rt.id = ids[i];
    const auto& rs = byRun[i];
    for (const auto* r : rs) rt.points.push_back(r ? std::optional<TrendPoint>(pointOf(*r)) : std::nullopt);
    const RunResult* newest = rs[n - 1];
    const RunResult* previous = nullptr;
    for (size_t k = n - 1; k-- > 0;)
      if (rs[k]) {
        previous = rs[k];
        break;
      }
    if (!newest) {
      rt.flags.push_back("missing from the newest report (was " + statusName(previous->status) + ")");
    } else if (!previous) {
      if (newest->status == Status::kFail || newest->status == Status::kError)
        rt.flags.push_back("new run, " + statusName(newest->status));
    } else {
      for (const auto& c : compareReports(single(*previous), single(*newest), o.compare))
        if (c.regression) rt.flags.push_back(c.what);
      // Time: against the median of every earlier report that ran it (not
      // a skip: a skipped run's seconds are not a run's time).
      std::vector<double> earlier;
      for (size_t k = 0; k + 1 < n; ++k)
        if (rs[k] && rs[k]->status != Status::kSkip) earlier.push_back(rs[k]->seconds);
      if (!earlier.empty() && newest->status != Status::kSkip) {
        const double med = median(earlier);
        if (newest->seconds >= o.timeFactor * med && newest->seconds - med >= o.minSeconds)
          rt.flags.push_back(moe::str("time ", formatSeconds(med), " (median of ", earlier.size(), ") -> ",
                                      formatSeconds(newest->seconds), " (x", formatDouble(newest->seconds / med),
                                      ")"));
      }
    }
    t.runs.push_back(std::move(rt));
  }
  return t;
}

namespace {

std::string statusCell(const std::optional<TrendPoint>& p) { return p ? statusName(p->status) : "-"; }
std::string marginCell(const std::optional<TrendPoint>& p) {
  return p && p->worstMargin ? formatDouble(*p->worstMargin) : "-";
}
std::string timeCell(const std::optional<TrendPoint>& p) {
  return p && p->status != Status::kSkip ? formatSeconds(p->seconds) : "-";
}

template <class F>
std::string joined(const std::vector<std::optional<TrendPoint>>& ps, F f) {
  std::string out;
  for (size_t k = 0; k < ps.size(); ++k) out += (k ? " → " : "") + f(ps[k]);
  return out;
}

std::string flagText(const RunTrend& r) {
  std::string out;
  for (const auto& f : r.flags) out += (out.empty() ? "" : "; ") + f;
  return out;
}

}  // namespace

void printTrendMarkdown(const Trend& t, std::ostream& os) {
  os << "# moe-harness trend\n\n";
  os << t.created.size() << " reports, oldest first; " << t.regressions() << " regression(s) in the newest.\n\n";
  os << "| # | created | pass | fail | error | skip | suite time | report |\n|---|---|---|---|---|---|---|---|\n";
  for (size_t k = 0; k < t.created.size(); ++k)
    os << "| " << k + 1 << " | " << markdownCell(t.created[k]) << " | " << t.totals[k].pass << " | " << t.totals[k].fail
       << " | " << t.totals[k].error << " | " << t.totals[k].skip << " | " << formatSeconds(t.suiteSeconds[k]) << " | "
       << markdownCell(t.sources[k]) << " |\n";
  os << "\nPer run: status, worst margin (measured / tolerance; > 1 fails) and wall time in each report, oldest "
        "first (`-`: not in that report, or no parity result).\n\n";
  os << "| run | status | worst margin | time | regression |\n|---|---|---|---|---|\n";
  // Regressions first, then the rest in the newest report's order.
  for (int pass = 0; pass < 2; ++pass)
    for (const auto& r : t.runs) {
      if (r.regression() != (pass == 0)) continue;
      os << "| " << markdownCell(r.id) << " | " << joined(r.points, statusCell) << " | "
         << joined(r.points, marginCell) << " | " << joined(r.points, timeCell) << " | "
         << (r.regression() ? "**REGRESSION** " + markdownCell(flagText(r)) : "") << " |\n";
    }
}

namespace {

// Sparkline geometry.
constexpr double kSparkW = 220, kSparkH = 70, kSparkPadL = 40, kSparkPadR = 6, kSparkPadT = 14, kSparkPadB = 12;

// One small chart of `values` (nullopt: no point in that report) over the
// reports; `limit` draws a dashed line (the margin's 1).
void sparkline(std::ostream& os, const std::string& title, const std::vector<std::optional<double>>& values,
               std::optional<double> limit) {
  double hi = limit.value_or(0);
  for (const auto& v : values)
    if (v) hi = std::max(hi, *v);
  if (!(hi > 0)) hi = 1;
  hi *= 1.1;
  const size_t n = values.size();
  auto x = [&](size_t k) { return kSparkPadL + (n > 1 ? k * (kSparkW - kSparkPadL - kSparkPadR) / (n - 1) : 0.0); };
  auto y = [&](double v) { return kSparkH - kSparkPadB - v / hi * (kSparkH - kSparkPadT - kSparkPadB); };
  os << "<svg class=\"spark\" width=\"" << kSparkW << "\" height=\"" << kSparkH << "\" role=\"img\" aria-label=\""
     << htmlEscape(title) << "\"><text class=\"title\" x=\"" << svgNumber(kSparkW / 2) << "\" y=\"10\">" << htmlEscape(title)
     << "</text><line class=\"axis\" x1=\"" << kSparkPadL << "\" y1=\"" << kSparkH - kSparkPadB << "\" x2=\"" << kSparkW - kSparkPadR
     << "\" y2=\"" << kSparkH - kSparkPadB << "\"/><text class=\"tick\" x=\"" << kSparkPadL - 3 << "\" y=\"" << svgNumber(y(hi / 1.1) + 3)
     << "\">" << htmlEscape(formatDouble(hi / 1.1)) << "</text>";
  if (limit)
    os << "<line class=\"limit\" x1=\"" << kSparkPadL << "\" y1=\"" << svgNumber(y(*limit)) << "\" x2=\"" << kSparkW - kSparkPadR
       << "\" y2=\"" << svgNumber(y(*limit)) << "\"/>";
  std::string pts;
  for (size_t k = 0; k < n; ++k)
    if (values[k]) pts += svgNumber(x(k)) + "," + svgNumber(y(*values[k])) + " ";
  os << "<polyline points=\"" << pts << "\"/>";
  for (size_t k = 0; k < n; ++k)
    if (values[k])
      os << "<circle cx=\"" << svgNumber(x(k)) << "\" cy=\"" << svgNumber(y(*values[k])) << "\" r=\"2.5\"" << ">"
         << "<title>report " << k + 1 << ": " << htmlEscape(formatDouble(*values[k])) << "</title></circle>";
  os << "</svg>";
}

}  // namespace

void printTrendHtml(const Trend& t, std::ostream& os) {
  os << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>moe-harness trend</title><style>\n"
        "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:3px 6px;vertical-align:middle;font-size:13px}"
        "tr.reg td{background:#fdecea}.flag{color:#b00020;font-weight:bold}"
        "svg.spark{background:#fff}svg .axis{stroke:#888}svg .title{font-size:10px;text-anchor:middle;fill:#333}"
        "svg .tick{font-size:9px;text-anchor:end;fill:#555}svg polyline{fill:none;stroke:#1f5fbf;stroke-width:1.5}"
        "svg circle{fill:#1f5fbf}svg line.limit{stroke:#b00020;stroke-dasharray:4 2}"
        "\n</style></head><body>\n<h1>moe-harness trend</h1>\n";
  os << "<p>" << t.created.size() << " reports, oldest first; <span class=\"flag\">" << t.regressions()
     << " regression(s)</span> in the newest.</p>\n<table><tr><th>#</th><th>created</th><th>pass</th><th>fail</th>"
        "<th>error</th><th>skip</th><th>suite time</th><th>report</th></tr>\n";
  for (size_t k = 0; k < t.created.size(); ++k)
    os << "<tr><td>" << k + 1 << "</td><td>" << htmlEscape(t.created[k]) << "</td><td>" << t.totals[k].pass
       << "</td><td>" << t.totals[k].fail << "</td><td>" << t.totals[k].error << "</td><td>" << t.totals[k].skip
       << "</td><td>" << htmlEscape(formatSeconds(t.suiteSeconds[k])) << "</td><td>" << htmlEscape(t.sources[k])
       << "</td></tr>\n";
  os << "</table>\n<h2>Runs</h2>\n<p>Worst margin: measured / tolerance of the parity check (the dashed line is 1: "
        "above it the run fails). Time: the run's wall time.</p>\n<table><tr><th>run</th><th>status</th>"
        "<th>worst margin</th><th>time (s)</th><th>regression</th></tr>\n";
  for (int pass = 0; pass < 2; ++pass)
    for (const auto& r : t.runs) {
      if (r.regression() != (pass == 0)) continue;
      std::vector<std::optional<double>> margin, secs;
      for (const auto& p : r.points) {
        margin.push_back(p ? p->worstMargin : std::nullopt);
        secs.push_back(p && p->status != Status::kSkip ? std::optional<double>(p->seconds) : std::nullopt);
      }
      os << "<tr" << (r.regression() ? " class=\"reg\"" : "") << "><td>" << htmlEscape(r.id) << "</td><td>"
         << htmlEscape(joined(r.points, statusCell)) << "</td><td>";
      sparkline(os, r.id + " worst margin", margin, 1.0);
      os << "</td><td>";
      sparkline(os, r.id + " seconds", secs, std::nullopt);
      os << "</td><td>" << (r.regression() ? "<span class=\"flag\">REGRESSION</span> " + htmlEscape(flagText(r)) : "")
         << "</td></tr>\n";
    }
  os << "</table>\n</body></html>\n";
}

}  // namespace moe::reports
