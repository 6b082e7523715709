// `moe-harness compare OLD NEW`: the runs whose result or margin changed.
#include <iostream>

#include "harness/cli/commands.h"
#include "reports/compare.h"
#include "harness/cli/compare_command.h"

namespace moe::reports {

void addCompareCommand(CLI::App& app) {
  struct Args {
    std::string oldPath, newPath;
    CompareOptions options;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("compare",
                                 "Runs whose result or margin changed between two reports (exit 1 on a regression)");
  cmd->add_option("old", a->oldPath, "older report.json (or its directory)")->required();
  cmd->add_option("new", a->newPath, "newer report.json (or its directory)")->required();
  cmd->add_option("--factor", a->options.factor, "flag a margin that changed by at least this factor")
      ->capture_default_str()->check(CLI::Range(1.0001, 1e12));
  cmd->add_option("--min-margin", a->options.minMargin, "margins below this in both reports are not compared")
      ->capture_default_str();
  cmd->callback([a] {
    const Report before = readReport(a->oldPath), after = readReport(a->newPath);
    const auto changes = compareReports(before, after, a->options);
    int regressions = 0;
    for (const auto& c : changes) {
      std::cout << (c.regression ? "REGRESSION " : "changed    ") << c.id << ": " << c.what << "\n";
      regressions += c.regression;
    }
    std::cout << changes.size() << " run(s) changed, " << regressions << " regression(s) between "
              << before.runs.size() << " and " << after.runs.size() << " runs" << std::endl;
    if (regressions) throw cli::CommandExit{1};
  });
}

}  // namespace moe::reports

namespace moe::cli {
MOE_REGISTER(Command, FunctionCommand, "compare", moe::reports::addCompareCommand);
}  // namespace moe::cli
