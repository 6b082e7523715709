#pragma once
// The moe-harness command line as a function, so that main() and a rank
// forked by the fork server (harness/launch/fork_server.h) run the same code.

namespace moe::cli {

// Parses argv, runs the chosen subcommand and returns the process's exit code
// (README "Exit codes", docs/errors.md): every exception is turned into its
// message on stderr, its code and, inside a launched job, the rank's failure
// record.
int runCommandLine(int argc, char** argv);

// Starts the fork server when this command line launches moe-harness ranks
// that may be forked: `run` and `mutate` (unless `--spawn exec` or
// MOE_HARNESS_SPAWN=exec), `launch --spawn fork`. Call first in main(),
// before anything starts a thread; when the process already has threads it
// starts nothing and the launches exec (the report says so).
void startForkServerIfUseful(int argc, char** argv);

}  // namespace moe::cli
