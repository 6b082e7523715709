// moe-harness: the command-line entry point. Subcommands register in
// kCommands (see commands.h for how to add one).
#include <iostream>

#include "harness/cases/cases_commands.h"
#include "harness/cli/commands.h"
#include "harness/common/error.h"
#include "reference/mutants/mutate_command.h"
#include "reference/reference_command.h"
#include "reference/run_plan_command.h"
#include "reports/compare_command.h"

namespace {
using Register = void (*)(CLI::App&);
const Register kCommands[] = {
    moe::cli::addLaunchCommand,
    moe::cli::addSelftestCommand,
    moe::cli::addTracesCommand,
    moe::ref::addReferenceCommand,
    moe::ref::addRunPlanCommand,
    moe::cases::addRunCommand,
    moe::cases::addListCommand,
    moe::cases::addValidateCommand,
    moe::cases::addDescribeCommand,
    moe::reports::addCompareCommand,
    moe::mutants::addMutateCommand,
};
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moe-harness: conformance harness for distributed Mixture-of-Experts training"};
  app.require_subcommand(1);
  for (Register r : kCommands) r(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const moe::cli::CommandExit& e) {
    return e.code;
  } catch (const moe::HarnessError& e) {
    std::cerr << "moe-harness: error: " << e.what() << std::endl;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "moe-harness: internal error: " << e.what() << std::endl;
    return 3;
  }
  return 0;
}
