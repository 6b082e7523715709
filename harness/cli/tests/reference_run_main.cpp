// Stand-alone driver of the `reference` subcommand, so tests (the PyTorch
// oracle) can run it without the full moe-harness CLI.
#include <CLI/CLI.hpp>

#include "common/error.h"
#include "harness/cli/reference_command.h"

int main(int argc, char** argv) {
  CLI::App app("reference run driver (tests)");
  app.require_subcommand(1);
  moe::ref::addReferenceCommand(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const moe::HarnessError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
