#include "harness/cli/command_line.h"

#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>

#include "common/error.h"
#include "harness/comm/communicator.h"
#include "harness/cli/commands.h"
#include "harness/launch/failure.h"
#include "harness/launch/fork_server.h"
#include "harness/launch/launcher.h"

namespace moe::cli {

int runCommandLine(int argc, char** argv) {
  CLI::App app{"moe-harness: conformance harness for distributed Mixture-of-Experts training"};
  app.require_subcommand(1);
  for (const Command* c : Registry<Command>::instance().all()) c->add(app);
  // A rank whose command ran to its end reports a mismatch in its last
  // collectives that trace verification found meanwhile
  // (comm::settleVerification): a negative verdict of a run on
  // mismatched collectives is not the run's verdict.
  auto settle = [](int code) {
    if (code != 0 && code != 1) return code;
    const std::string v = comm::settleVerification();
    if (v.empty()) return code;
    launch::recordRankFailure("user_error", v);
    std::cerr << "moe-harness: error: " << v << std::endl;
    return 2;
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints its message and usage. A rejected command line is a user
    // error: exit 2, not CLI11's own codes (100-127 would collide with the
    // launcher's 111/112/124/125/127); --help (CLI11 code 0) stays 0.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const CommandExit& e) {
    return settle(e.code);
  } catch (const HarnessError& e) {
    // Inside a launched job the launcher reads this record to tell the rank
    // that failed on its own from those that failed because of it.
    launch::recordRankFailure("user_error", e.what());
    std::cerr << "moe-harness: error: " << e.what() << std::endl;
    return 2;
  } catch (const std::exception& e) {
    launch::recordRankFailure("internal_error", e.what());
    std::cerr << "moe-harness: internal error: " << e.what() << std::endl;
    return 3;
  }
  return settle(0);
}

void startForkServerIfUseful(int argc, char** argv) {
  if (argc < 2) return;
  const std::string sub = argv[1];
  // The subcommand's own --spawn, else MOE_HARNESS_SPAWN, else its default.
  // Malformed values are left to the command line's own parsing (a user error).
  std::string mode;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) break;  // launch: the program's own arguments
    if (std::strcmp(argv[i], "--spawn") == 0 && i + 1 < argc) mode = argv[i + 1];
    if (std::strncmp(argv[i], "--spawn=", 8) == 0) mode = argv[i] + 8;
  }
  if (mode.empty() && std::getenv(launch::kSpawnEnv)) mode = std::getenv(launch::kSpawnEnv);
  const bool forks = sub == "launch" ? mode == "fork" : (sub == "run" || sub == "mutate") && mode != "exec";
  if (!forks) return;
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return;  // launches exec, and say why (forkServerUnavailableReason)
  launch::startForkServer(self.string(), &runCommandLine);
}

}  // namespace moe::cli
