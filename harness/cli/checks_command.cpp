// `moe-harness checks`: every registered check (Registry<Check>) in the order
// run-plan reports them, with the state of the run it reads, its inputs and
// where its tolerance comes from. Case files select checks by these names
// (expect.checks).
#include <iostream>

#include "harness/checks/check_registry.h"
#include "harness/cli/commands.h"

namespace moe::cli {
namespace {

class ChecksCommand : public Command {
 public:
  std::string name() const override { return "checks"; }
  void add(CLI::App& app) const override {
    auto* sub = app.add_subcommand("checks", "List the checks of a conformance run: stage, inputs, tolerance source");
    sub->callback([] {
      for (const checks::Check* c : checks::checksInOrder()) {
        std::cout << c->name() << "\n"
                  << "  " << c->description() << "\n"
                  << "  stage:     " << checks::stageName(c->stage()) << "\n"
                  << "  reads:     " << c->inputs() << "\n"
                  << "  tolerance: " << c->toleranceSource() << "\n";
      }
    });
  }
};

}  // namespace

MOE_REGISTER(Command, ChecksCommand);

}  // namespace moe::cli
