#pragma once
// Subcommands of `moe-harness`, plug-ins of the Command interface (the
// project's one registry idiom, common/registry.h).
//
// How to add a command: write harness/cli/<name>_command.cpp with a
// function that creates the subcommand and its callback on the app (or a
// class deriving from Command), end the file with
// `MOE_REGISTER(Command, FunctionCommand, "<name>", addMyCommand);`, and add
// the file to moe_cli in CMakeLists.txt. main.cpp adds every registered
// command. Callbacks report their result by throwing CommandExit(code) or
// returning normally (exit code 0).
#include <CLI/CLI.hpp>

#include <string>

#include "common/registry.h"

namespace moe::cli {

struct CommandExit {
  int code;
};

class Command {
 public:
  static constexpr const char* kPluginKind = "command";
  virtual ~Command() = default;
  virtual std::string name() const = 0;  // the subcommand's name
  // Adds the subcommand (its options and callback) to `app`.
  virtual void add(CLI::App& app) const = 0;
};

// A command whose subcommand is created by a free function (the function
// stays callable on its own, e.g. by a test driver):
//   MOE_REGISTER(Command, FunctionCommand, "run-plan", addRunPlanCommand);
class FunctionCommand : public Command {
 public:
  FunctionCommand(std::string name, void (*addFn)(CLI::App&)) : name_(std::move(name)), addFn_(addFn) {}
  std::string name() const override { return name_; }
  void add(CLI::App& app) const override { addFn_(app); }

 private:
  std::string name_;
  void (*addFn_)(CLI::App&);
};

void addLaunchCommand(CLI::App& app);
void addSelftestCommand(CLI::App& app);
void addTracesCommand(CLI::App& app);

}  // namespace moe::cli
