// `moe-harness launch -n N [--timeout S] [--iface IF] [--spawn exec|fork] -- PROGRAM [ARGS...]`
#include <iostream>

#include "harness/cli/commands.h"
#include "harness/launch/launcher.h"

namespace moe::cli {

void addLaunchCommand(CLI::App& app) {
  struct Args {
    int n = 1;
    double timeout = 0;
    double grace = 2;
    double desyncGrace = 2;
    std::string traceDir;
    std::string iface;
    bool noPrefix = false;
    std::string spawn = "exec";
    std::vector<std::string> program;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("launch", "Run PROGRAM as N ranks on this machine (torchrun-compatible environment)");
  cmd->add_option("-n,--nproc", args->n, "Number of ranks")->required()->check(CLI::Range(1, 1024));
  cmd->add_option("--timeout", args->timeout, "Seconds before the job is stopped and every rank's state reported (0: none)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--kill-grace", args->grace, "Seconds between SIGTERM and SIGKILL when stopping ranks");
  cmd->add_option("--desync-grace", args->desyncGrace,
                  "Seconds a proven collective deadlock must persist before the job is stopped as a desync (0: off)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--trace-dir", args->traceDir, "Keep the flight-recorder traces in this directory");
  cmd->add_option("--iface", args->iface,
                  "Network interface name or address the job's store listens on, passed to the ranks' Gloo devices "
                  "(MOE_HARNESS_IFACE); default loopback (127.0.0.1), which no other host can reach");
  cmd->add_option("--spawn", args->spawn,
                  "exec: every rank execs PROGRAM (any program); fork: when PROGRAM is this moe-harness, ranks are "
                  "forked from its fork server and run the subcommand in-process (no libtorch start-up per rank)")
      ->check(CLI::IsMember({"exec", "fork"}))
      ->capture_default_str();
  cmd->add_flag("--no-prefix", args->noPrefix, "Do not prefix output lines with [rank R]");
  cmd->add_option("program", args->program, "PROGRAM [ARGS...] after --")->required();
  cmd->callback([args] {
    launch::LaunchOptions o;
    o.nranks = args->n;
    o.timeout = std::chrono::milliseconds(static_cast<int64_t>(args->timeout * 1000));
    o.killGrace = std::chrono::milliseconds(static_cast<int64_t>(args->grace * 1000));
    o.desyncGrace = std::chrono::milliseconds(static_cast<int64_t>(args->desyncGrace * 1000));
    o.traceDir = args->traceDir;
    o.prefixOutput = !args->noPrefix;
    o.iface = args->iface;
    o.spawn = launch::parseSpawnMode(args->spawn, "--spawn");
    auto r = launch::launchProgram(o, args->program);
    if (!r.ok) throw CommandExit{r.exitCode()};
  });
}

}  // namespace moe::cli

namespace moe::cli {
MOE_REGISTER(Command, FunctionCommand, "launch", moe::cli::addLaunchCommand);
}  // namespace moe::cli
