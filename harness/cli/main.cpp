// moe-harness: the command-line entry point. Exit codes (README "Exit codes",
// docs/errors.md): 0 success, 1 a negative verdict, 2 a user error (a rejected
// command line included), 3 an internal error, 77 skipped, 124/125 from launch.
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
    // CLI11 prints its message and usage. A rejected command line is a user
    // error: exit 2, not CLI11's own codes (100-127 would collide with the
    // launcher's 111/112/124/125/127); --help (CLI11 code 0) stays 0.
    return app.exit(e) == 0 ? 0 : 2;
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
