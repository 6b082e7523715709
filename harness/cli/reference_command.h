#pragma once
// `moe-harness reference`: runs reference/train/reference_run.h's
// runReference from the command line (options: see there).
namespace CLI {
class App;
}

namespace moe::ref {

// Registers the `reference` subcommand on app.
void addReferenceCommand(CLI::App& app);

}  // namespace moe::ref
