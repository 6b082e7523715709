// `moe-harness trend R1 R2 R3 ...`: per run, the margin and time history over
// nightly reports, with the newest report's regressions flagged (trend.h).
#include <filesystem>
#include <fstream>
#include <iostream>

#include "common/error.h"
#include "harness/cli/commands.h"
#include "reports/trend.h"

namespace moe::reports {
namespace {

void addTrendCommand(CLI::App& app) {
  struct Args {
    std::vector<std::string> paths;
    std::string out;
    TrendOptions options;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "trend", "Margin, status and time history of every run over N reports, regressions of the newest flagged "
               "(Markdown on stdout; exit 1 on a regression)");
  cmd->add_option("reports", a->paths, "report.json files (or their directories), in any order: sorted by creation")
      ->required()
      ->expected(2, 1 << 20);
  cmd->add_option("--out", a->out, "also write trend.md and trend.html (inline charts) into this directory");
  cmd->add_option("--factor", a->options.compare.factor, "flag a margin that grew by at least this factor")
      ->capture_default_str()
      ->check(CLI::Range(1.0001, 1e12));
  cmd->add_option("--min-margin", a->options.compare.minMargin, "margins below this in both reports are not compared")
      ->capture_default_str();
  cmd->add_option("--time-factor", a->options.timeFactor,
                  "flag a run whose time is at least this factor over the median of its earlier times")
      ->capture_default_str()
      ->check(CLI::Range(1.0001, 1e12));
  cmd->add_option("--min-seconds", a->options.minSeconds, "... and at least this many seconds slower")
      ->capture_default_str();
  cmd->callback([a] {
    std::vector<Report> reports;
    for (const auto& p : a->paths) reports.push_back(readReport(p));
    const Trend t = buildTrend(std::move(reports), a->paths, a->options);
    printTrendMarkdown(t, std::cout);
    if (!a->out.empty()) {
      std::filesystem::create_directories(a->out);
      for (const char* name : {"trend.md", "trend.html"}) {
        const auto path = std::filesystem::path(a->out) / name;
        std::ofstream os(path);
        if (!os) fail("trend: cannot write ", path.string());
        if (std::string(name) == "trend.md") printTrendMarkdown(t, os);
        else printTrendHtml(t, os);
        std::cerr << "wrote " << path.string() << "\n";
      }
    }
    if (t.regressions() > 0) throw cli::CommandExit{1};
  });
}

}  // namespace
}  // namespace moe::reports

namespace moe::cli {
MOE_REGISTER(Command, FunctionCommand, "trend", moe::reports::addTrendCommand);
}  // namespace moe::cli
