// report.html: one self-contained page (no network, no scripts, inline CSS):
// a summary table of pass/fail/skip/error, then per run one inline SVG with
// two panels: the loss curves of the reference and the run, and |Δloss| per
// step on a log scale against the tolerance band; a line with the measured
// memory per rank; then the checks with their explanations and, for runs
// that did not pass, the failure details.
#include <algorithm>
#include <cmath>
#include <ostream>
#include <sstream>

#include "reports/printer.h"

namespace moe::reports {
namespace {

std::string esc(const std::string& s) { return htmlEscape(s); }

// Chart geometry: two panels of kW x kH side by side.
constexpr double kW = 360, kH = 200, kPadL = 56, kPadR = 12, kPadT = 22, kPadB = 30;

struct Axis {
  double lo, hi;
  bool log;
  double map(double v, double pixLo, double pixHi) const {
    double a = lo, b = hi, x = v;
    if (log) {
      a = std::log10(lo);
      b = std::log10(hi);
      x = std::log10(std::max(v, lo));
    }
    const double t = b > a ? (x - a) / (b - a) : 0.5;
    return pixLo + t * (pixHi - pixLo);
  }
};

std::string polyline(const std::vector<std::pair<double, double>>& pts, const std::string& cls) {
  std::string out = "<polyline class=\"" + cls + "\" points=\"";
  for (const auto& [x, y] : pts) out += svgNumber(x) + "," + svgNumber(y) + " ";
  return out + "\"/>";
}

// One panel at x offset `ox`: axes, ticks and labels; returns the x and y axes.
void frame(std::ostream& os, double ox, const std::string& title, const Axis& y, int steps) {
  const double x0 = ox + kPadL, x1 = ox + kW - kPadR, y0 = kH - kPadB, y1 = kPadT;
  os << "<text class=\"title\" x=\"" << svgNumber(ox + kW / 2) << "\" y=\"14\">" << esc(title) << "</text>";
  os << "<line class=\"axis\" x1=\"" << svgNumber(x0) << "\" y1=\"" << svgNumber(y0) << "\" x2=\"" << svgNumber(x1) << "\" y2=\""
     << svgNumber(y0) << "\"/>";
  os << "<line class=\"axis\" x1=\"" << svgNumber(x0) << "\" y1=\"" << svgNumber(y0) << "\" x2=\"" << svgNumber(x0) << "\" y2=\""
     << svgNumber(y1) << "\"/>";
  for (int i = 0; i <= 2; ++i) {  // three y ticks: low, middle, high
    double v;
    if (y.log) v = std::pow(10.0, std::log10(y.lo) + i * (std::log10(y.hi) - std::log10(y.lo)) / 2);
    else v = y.lo + i * (y.hi - y.lo) / 2;
    const double py = y.map(v, y0, y1);
    os << "<text class=\"tick\" x=\"" << svgNumber(x0 - 4) << "\" y=\"" << svgNumber(py + 3) << "\" text-anchor=\"end\">"
       << esc(formatDouble(v)) << "</text>";
  }
  for (int s = 1; s <= steps; ++s) {
    const double px = steps > 1 ? x0 + (s - 1) * (x1 - x0) / (steps - 1) : (x0 + x1) / 2;
    if (steps <= 12 || s == 1 || s == steps || s % ((steps + 9) / 10) == 0)
      os << "<text class=\"tick\" x=\"" << svgNumber(px) << "\" y=\"" << svgNumber(y0 + 14) << "\" text-anchor=\"middle\">" << s
         << "</text>";
  }
  os << "<text class=\"tick\" x=\"" << svgNumber((x0 + x1) / 2) << "\" y=\"" << svgNumber(kH - 2) << "\" text-anchor=\"middle\">step</text>";
}

void charts(std::ostream& os, const RunResult& r) {
  os << "<svg class=\"chart\" width=\"" << 2 * kW << "\" height=\"" << kH << "\" viewBox=\"0 0 " << 2 * kW << " " << kH
     << "\" role=\"img\" aria-label=\"" << esc(r.id) << " loss charts\">";
  const int n = static_cast<int>(r.steps.size());
  if (n == 0) {
    os << "<text class=\"title\" x=\"" << kW << "\" y=\"" << kH / 2 << "\">no per-step values (" << statusName(r.status)
       << ")</text></svg>";
    return;
  }
  const double x0 = kPadL, x1 = kW - kPadR, y0 = kH - kPadB, y1 = kPadT;
  auto px = [&](int i, double ox) { return ox + (n > 1 ? x0 + i * (x1 - x0) / (n - 1) : (x0 + x1) / 2); };
  // Panel 1: loss of the reference and of the run.
  double lo = 1e300, hi = -1e300;
  for (const auto& s : r.steps) {
    lo = std::min({lo, s.loss, s.referenceLoss});
    hi = std::max({hi, s.loss, s.referenceLoss});
  }
  if (!(hi > lo)) {
    lo -= 0.5;
    hi += 0.5;
  }
  const double pad = (hi - lo) * 0.08;
  Axis ly{lo - pad, hi + pad, false};
  frame(os, 0, "loss: reference vs run", ly, n);
  std::vector<std::pair<double, double>> ref, run;
  for (int i = 0; i < n; ++i) {
    ref.push_back({px(i, 0), ly.map(r.steps[i].referenceLoss, y0, y1)});
    run.push_back({px(i, 0), ly.map(r.steps[i].loss, y0, y1)});
  }
  os << polyline(ref, "ref") << polyline(run, "run");
  for (const auto& [x, y] : run) os << "<circle class=\"run\" cx=\"" << svgNumber(x) << "\" cy=\"" << svgNumber(y) << "\" r=\"2.5\"/>";
  os << "<text class=\"legend ref\" x=\"" << svgNumber(x1 - 4) << "\" y=\"" << svgNumber(y1 + 10) << "\" text-anchor=\"end\">reference</text>";
  os << "<text class=\"legend run\" x=\"" << svgNumber(x1 - 4) << "\" y=\"" << svgNumber(y1 + 22) << "\" text-anchor=\"end\">run</text>";
  // Panel 2: |Δloss| per step (log scale) against the tolerance band.
  const double tol = r.lossTolerance;
  double dmax = 0, dminPos = 1e300;
  for (const auto& s : r.steps) {
    const double d = std::abs(s.loss - s.referenceLoss);
    dmax = std::max(dmax, d);
    if (d > 0) dminPos = std::min(dminPos, d);
  }
  double top = std::max(dmax, tol) * 3;
  if (!(top > 0)) top = 1;
  double bottom = std::min(dminPos, tol > 0 ? tol : top) / 10;
  bottom = std::max(bottom, top * 1e-9);  // a zero difference sits on the floor
  if (!(bottom < top)) bottom = top / 1000;
  Axis dy{bottom, top, true};
  frame(os, kW, "|Δloss| per step vs tolerance", dy, n);
  if (tol > 0) {
    const double ty = dy.map(tol, y0, y1);
    os << "<rect class=\"band\" x=\"" << svgNumber(kW + x0) << "\" y=\"" << svgNumber(ty) << "\" width=\"" << svgNumber(x1 - x0)
       << "\" height=\"" << svgNumber(y0 - ty) << "\"/>";
    os << "<line class=\"tol\" x1=\"" << svgNumber(kW + x0) << "\" y1=\"" << svgNumber(ty) << "\" x2=\"" << svgNumber(kW + x1)
       << "\" y2=\"" << svgNumber(ty) << "\"/>";
    os << "<text class=\"legend tol\" x=\"" << svgNumber(kW + x1 - 4) << "\" y=\"" << svgNumber(ty - 4) << "\" text-anchor=\"end\">tolerance "
       << esc(formatDouble(tol)) << "</text>";
  }
  std::vector<std::pair<double, double>> diff;
  for (int i = 0; i < n; ++i)
    diff.push_back({px(i, kW), dy.map(std::abs(r.steps[i].loss - r.steps[i].referenceLoss), y0, y1)});
  os << polyline(diff, "diff");
  for (int i = 0; i < n; ++i) {
    const double d = std::abs(r.steps[i].loss - r.steps[i].referenceLoss);
    os << "<circle class=\"" << (tol > 0 && d > tol ? "over" : "diff") << "\" cx=\"" << svgNumber(diff[i].first) << "\" cy=\""
       << svgNumber(diff[i].second) << "\" r=\"2.5\"><title>step " << r.steps[i].step << ": |Δloss| " << esc(formatDouble(d))
       << "</title></circle>";
  }
  os << "</svg>";
}

const char* kStyle = R"css(
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px;vertical-align:top}
th{background:#f3f3f3}
.pass{color:#14692c;font-weight:bold}.fail{color:#b00020;font-weight:bold}
.error{color:#8a4b00;font-weight:bold}.skip{color:#666;font-weight:bold}
.run-section{border-top:1px solid #ddd;margin-top:1.5em;padding-top:.5em}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:12px;max-height:24em}
svg.chart{background:#fff;border:1px solid #e5e5e5}
svg .axis{stroke:#888;stroke-width:1}
svg .title{font-size:12px;text-anchor:middle;fill:#333}
svg .tick,svg .legend{font-size:10px;fill:#555}
svg polyline{fill:none;stroke-width:1.6}
svg polyline.ref{stroke:#1f5fbf}svg polyline.run{stroke:#e07b00;stroke-dasharray:5 3}
svg circle.run{fill:#e07b00}svg .legend.ref{fill:#1f5fbf}svg .legend.run{fill:#e07b00}
svg polyline.diff{stroke:#6a3d9a}svg circle.diff{fill:#6a3d9a}svg circle.over{fill:#b00020}
svg rect.band{fill:#2ca02c;fill-opacity:.12}svg line.tol{stroke:#2ca02c;stroke-dasharray:4 2}
svg .legend.tol{fill:#2ca02c}
)css";

class HtmlPrinter : public ReportPrinter {
 public:
  std::string name() const override { return "html"; }
  std::string fileName() const override { return "report.html"; }
  void print(const Report& report, std::ostream& os) const override {
    const Totals t = report.totals();
    os << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
       << "<title>MoE conformance report</title><style>" << kStyle << "</style></head><body>\n";
    os << "<h1>MoE conformance report</h1>\n<p><span class=\"pass\">" << t.pass << " pass</span>, <span class=\"fail\">"
       << t.fail << " fail</span>, <span class=\"error\">" << t.error << " error</span>, <span class=\"skip\">" << t.skip
       << " skip</span> of " << t.total() << " runs in " << esc(formatSeconds(report.seconds)) << ". Created "
       << esc(report.created) << ".</p>\n";
    os << "<p>Environment: " << esc(environmentText(report.environment)) << ".</p>\n";
    if (report.suite.value("complete", true) == false)
      os << "<p class=\"fail\">Incomplete: the suite was stopped after " << report.runs.size() << " of "
         << report.suite.value("runs", 0) << " runs.</p>\n";
    if (const PhaseTotals pt = phaseTotals(report); pt.runs > 0) {
      // Summed over runs: with --jobs > 1 runs overlap, so the sum may exceed the suite's wall time.
      os << "<h2>Where the time goes</h2>\n<p>Summed over " << pt.runs << " runs.</p>\n<table><tr>";
      for (const auto& kv : pt.seconds) os << "<th>" << esc(kv.first) << "</th>";
      os << "</tr>\n<tr>";
      for (const auto& kv : pt.seconds) os << "<td>" << esc(formatSeconds(kv.second)) << "</td>";
      os << "</tr></table>\n";
    }
    os << "<h2>Summary</h2>\n<table><tr><th>run</th><th>status</th><th>world</th><th>mesh</th><th>dtype</th>"
       << "<th>margins (measured / tolerance)</th><th>time</th><th>reason</th></tr>\n";
    for (const auto& r : report.runs) {
      std::string m;
      for (const auto& [k, v] : margins(r)) m += (m.empty() ? "" : ", ") + k + " " + formatDouble(v);
      os << "<tr><td><a href=\"#run-" << esc(r.id) << "\">" << esc(r.id) << "</a></td><td class=\""
         << statusName(r.status) << "\">" << statusName(r.status) << "</td><td>"
         << esc(r.spec.contains("world_size") ? r.spec["world_size"].dump() : "-") << "</td><td>"
         << esc(r.spec.contains("mesh") ? r.spec["mesh"].dump() : "-") << "</td><td>" << esc(r.spec.value("dtype", "-"))
         << "</td><td>" << esc(m.empty() ? "-" : m) << "</td><td>" << esc(formatSeconds(r.seconds)) << "</td><td>"
         << esc(r.status == Status::kPass ? "" : r.reason) << "</td></tr>\n";
    }
    os << "</table>\n";
    for (const auto& r : report.runs) {
      os << "<div class=\"run-section\" id=\"run-" << esc(r.id) << "\"><h2>" << esc(r.id) << " — <span class=\""
         << statusName(r.status) << "\">" << statusName(r.status) << "</span></h2>\n";
      if (!r.spec.empty() && r.spec.contains("mesh"))
        os << "<p>" << esc(r.spec.value("description", "")) << "</p><p>world " << esc(r.spec["world_size"].dump())
           << ", mesh " << esc(r.spec["mesh"].dump()) << ", plan " << esc(r.spec.value("plan", "")) << ", wrapper "
           << esc(r.spec.value("wrapper", "")) << ", loading " << esc(r.spec.value("loading", "")) << ", "
           << esc(r.spec.value("dtype", "")) << ", " << esc(r.spec.contains("steps") ? r.spec["steps"].dump() : "?")
           << " steps, seed " << esc(r.spec.contains("seed") ? r.spec["seed"].dump() : "?") << "; "
           << esc(formatSeconds(r.seconds)) << "</p>\n";
      if (const std::string ph = phaseText(r); !ph.empty()) os << "<p>Phases: " << esc(ph) << ".</p>\n";
      charts(os, r);
      os << "\n";
      if (const auto m = measuredMemory(r); m.ranks() > 0)
        os << "<p>Measured memory per rank (tensor storage): peak during a step "
           << esc(formatBytesPerRank(m.peakBytes)) << ", after the last step " << esc(formatBytesPerRank(m.afterLastBytes))
           << "; measured / replicated " << esc(formatDouble(m.measuredRatio)) << " (peak "
           << esc(formatDouble(m.peakRatio)) << ", declared " << esc(formatDouble(m.declaredRatio)) << ")</p>\n";
      if (r.status != Status::kPass)
        os << "<p><b>" << (r.status == Status::kSkip ? "Skipped" : "Failure") << ":</b> " << esc(r.reason) << "</p>\n";
      if (!r.checks.empty()) {
        os << "<table><tr><th>check</th><th>verdict</th><th>explanation</th></tr>\n";
        for (const auto& c : r.checks)
          os << "<tr><td>" << esc(c.check) << (c.requested ? "" : " (not requested)") << "</td><td class=\""
             << (c.passed ? "pass\">pass" : "fail\">FAIL") << "</td><td>" << esc(c.explanation) << "</td></tr>\n";
        os << "</table>\n";
      }
      if (!r.flightRecorder.empty()) os << "<p>Flight recorder: <code>" << esc(r.flightRecorder) << "</code></p>\n";
      if (r.status != Status::kPass && !r.log.empty()) os << "<pre>" << esc(r.log) << "</pre>\n";
      os << "</div>\n";
    }
    os << "</body></html>\n";
  }
};

}  // namespace

MOE_REGISTER(ReportPrinter, HtmlPrinter);

}  // namespace moe::reports
