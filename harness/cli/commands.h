#pragma once
// Subcommands of `moe-harness`. How to add one: write a file with a function
// `void addXCommand(CLI::App& app)` that creates the subcommand and its
// callback, declare it here, and add one line to main.cpp's kCommands.
// Callbacks report their result by throwing CommandExit(code) or returning
// normally (exit code 0).
#include <CLI/CLI.hpp>

namespace moe::cli {

struct CommandExit {
  int code;
};

void addLaunchCommand(CLI::App& app);
void addSelftestCommand(CLI::App& app);
void addTracesCommand(CLI::App& app);

}  // namespace moe::cli
