// moe-harness: the command-line entry point. Every subcommand is a Command
// plug-in (commands.h says how to add one); exit codes: README "Exit codes".
#include <iostream>

#include "common/error.h"
#include "harness/cli/commands.h"

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
    std::cerr << "moe-harness: error: " << e.what() << std::endl;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "moe-harness: internal error: " << e.what() << std::endl;
    return 3;
  }
  return 0;
}
