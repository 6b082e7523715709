// moe-harness: the command-line entry point. Exit codes (README "Exit codes",
// docs/errors.md): 0 success, 1 a negative verdict, 2 a user error (a rejected
// command line included), 3 an internal error, 77 skipped, 124/125 from launch.
// How to add a subcommand (the project's one plug-in idiom,
// common/registry.h): write harness/cli/<name>_command.cpp with a function
// creating the subcommand, end it with
// `MOE_REGISTER(Command, FunctionCommand, "<name>", addMyCommand);`
// (commands.h) and add the file to moe_cli in harness/cli/CMakeLists.txt.
// command_line.cpp adds every registered command.
#include <csignal>

#include "harness/cli/command_line.h"

int main(int argc, char** argv) {
  // A rank that writes to a peer's closed socket must fail with EPIPE (an
  // error the launcher classifies as peer_gone, secondary), not die of
  // SIGPIPE: a crash by signal counts as a primary failure and was blamed
  // as the root cause ahead of the peer's own error. Python ignores SIGPIPE
  // too, so torch.distributed ranks behave the same. Set before the fork
  // server starts: forked and exec'd ranks inherit it.
  std::signal(SIGPIPE, SIG_IGN);
  // First, while this process has one thread: ranks of `run` and `mutate`
  // are forked from the server started here (harness/launch/fork_server.h).
  moe::cli::startForkServerIfUseful(argc, argv);
  return moe::cli::runCommandLine(argc, argv);
}
