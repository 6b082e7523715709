// moe-harness: the command-line entry point. Exit codes: README "Exit codes".
// How to add a subcommand (the project's one plug-in idiom,
// common/registry.h): write harness/cli/<name>_command.cpp with a function
// creating the subcommand, end it with
// `MOE_REGISTER(Command, FunctionCommand, "<name>", addMyCommand);`
// (commands.h) and add the file to moe_cli in harness/cli/CMakeLists.txt.
// This file adds every registered command.
#include <iostream>

#include "common/error.h"
#include "harness/cli/commands.h"
#include "harness/launch/failure.h"

int main(int argc, char** argv) {
  CLI::App app{"moe-harness: conformance harness for distributed Mixture-of-Experts training"};
  app.require_subcommand(1);
  for (const moe::cli::Command* c : moe::Registry<moe::cli::Command>::instance().all()) c->add(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const moe::cli::CommandExit& e) {
    return e.code;
  } catch (const moe::HarnessError& e) {
    // Inside a launched job the launcher reads this record to tell the rank
    // that failed on its own from those that failed because of it.
    moe::launch::recordRankFailure("user_error", e.what());
    std::cerr << "moe-harness: error: " << e.what() << std::endl;
    return 2;
  } catch (const std::exception& e) {
    moe::launch::recordRankFailure("internal_error", e.what());
    std::cerr << "moe-harness: internal error: " << e.what() << std::endl;
    return 3;
  }
  return 0;
}
