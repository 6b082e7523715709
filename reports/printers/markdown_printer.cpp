// report.md: summary, one table row per run, then the details of every run
// that did not pass (its checks with explanations, its reason, its log), the
// measured memory per rank of the runs that report it, and every run's checks.
#include <ostream>

#include "reports/printer.h"

namespace moe::reports {
namespace {

std::string cell(const std::string& s) { return markdownCell(s); }

std::string marginText(const RunResult& r) {
  const auto m = margins(r);
  std::string out;
  for (const auto& [k, v] : m) out += (out.empty() ? "" : ", ") + k + " " + formatDouble(v);
  return out.empty() ? "-" : out;
}

class MarkdownPrinter : public ReportPrinter {
 public:
  std::string name() const override { return "md"; }
  std::string fileName() const override { return "report.md"; }
  void print(const Report& report, std::ostream& os) const override {
    const Totals t = report.totals();
    os << "# MoE conformance report\n\n";
    os << "**" << t.pass << " pass, " << t.fail << " fail, " << t.error << " error, " << t.skip << " skip** of "
       << t.total() << " runs in " << formatSeconds(report.seconds) << " (created " << report.created << ").\n\n";
    os << "Environment: " << environmentText(report.environment) << ".\n\n";
    if (report.suite.value("complete", true) == false)
      os << "**Incomplete**: the suite was stopped after " << report.runs.size() << " of " << report.suite.value("runs", 0)
         << " runs.\n\n";
    if (const PhaseTotals pt = phaseTotals(report); pt.runs > 0) {
      // Summed over runs: with --jobs > 1 runs overlap, so the sum may exceed the suite's wall time.
      os << "Where the time goes (summed over " << pt.runs << " runs):";
      for (const auto& [name, secs] : pt.seconds) os << " " << name << " " << formatSeconds(secs) << ";";
      os << "\n\n";
    }
    os << "Margins are measured / tolerance (above 1 fails).\n\n";
    os << "| run | status | world | mesh | dtype | margins | time | result |\n";
    os << "|---|---|---|---|---|---|---|---|\n";
    for (const auto& r : report.runs) {
      std::string result = r.reason;
      if (r.status == Status::kPass) {
        result.clear();
        for (const auto& c : r.checks)
          if (c.requested) result += (result.empty() ? "" : "; ") + c.check + " ok";
      }
      os << "| " << cell(r.id) << " | " << statusName(r.status) << " | "
         << (r.spec.contains("world_size") ? r.spec["world_size"].dump() : "-") << " | "
         << cell(r.spec.contains("mesh") ? r.spec["mesh"].dump() : "-") << " | "
         << cell(r.spec.value("dtype", "-")) << " | " << marginText(r) << " | " << formatSeconds(r.seconds)
         << " | " << cell(result) << " |\n";
    }
    bool header = false;
    for (const auto& r : report.runs) {
      if (r.status == Status::kPass) continue;
      if (!header) os << "\n## Runs that did not pass\n";
      header = true;
      os << "\n### " << r.id << " — " << statusName(r.status) << "\n\n";
      if (!r.caseFile.empty()) os << "Case file: `" << r.caseFile << "`\n\n";
      os << "Reason: " << r.reason << "\n\n";
      for (const auto& c : r.checks)
        os << "- " << (c.passed ? "pass" : "**FAIL**") << " `" << c.check << "`"
           << (c.requested ? "" : " (not requested)") << ": " << c.explanation << "\n";
      if (!r.flightRecorder.empty()) os << "\nFlight recorder: `" << r.flightRecorder << "`\n";
      if (!r.log.empty()) os << "\n```\n" << r.log << (r.log.back() == '\n' ? "" : "\n") << "```\n";
    }
    bool memoryHeader = false;
    for (const auto& r : report.runs) {
      const auto m = measuredMemory(r);
      if (m.ranks() == 0) continue;
      if (!memoryHeader) {
        os << "\n## Measured memory per rank\n\n"
           << "libtorch CPU tensor storage counted by the allocation tracker, beyond what was live before loading; "
           << "ratios are world sums over the replicated layout's declared bytes.\n\n"
           << "| run | wrapper | peak during a step (per rank) | after the last step (per rank) | measured ratio | "
              "peak ratio | declared ratio |\n|---|---|---|---|---|---|---|\n";
        memoryHeader = true;
      }
      os << "| " << cell(r.id) << " | " << cell(r.spec.value("wrapper", "-")) << " | "
         << formatBytesPerRank(m.peakBytes) << " | " << formatBytesPerRank(m.afterLastBytes) << " | "
         << formatDouble(m.measuredRatio) << " | " << formatDouble(m.peakRatio) << " | "
         << formatDouble(m.declaredRatio) << " |\n";
    }
    os << "\n## Checks per run\n\n";
    for (const auto& r : report.runs) {
      if (r.checks.empty()) continue;
      os << "- **" << r.id << "**: ";
      for (size_t i = 0; i < r.checks.size(); ++i)
        os << (i ? "; " : "") << r.checks[i].check << " " << (r.checks[i].passed ? "ok" : "FAIL") << " ("
           << cell(r.checks[i].explanation) << ")";
      os << "\n";
    }
  }
};

}  // namespace

MOE_REGISTER(ReportPrinter, MarkdownPrinter);

}  // namespace moe::reports
