// `moe-harness traces DIR -n N [--json]`: reads the flight-recorder files of
// a job (kept with `launch --trace-dir DIR`), live or finished, and prints
// the per-rank table and where the ranks diverge.
#include <iostream>
#include <nlohmann/json.hpp>

#include "harness/cli/commands.h"
#include "harness/comm/flight_recorder.h"

namespace moe::cli {

void addTracesCommand(CLI::App& app) {
  struct Args {
    std::string dir;
    int n = 1;
    bool json = false;
    int last = 8;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("traces", "Show the flight-recorder traces of a (running or finished) job");
  cmd->add_option("dir", args->dir, "Trace directory (launch --trace-dir)")->required();
  cmd->add_option("-n,--nproc", args->n, "Number of ranks")->required();
  cmd->add_option("--last", args->last, "Collectives per rank in the table");
  cmd->add_flag("--json", args->json, "Print JSON");
  cmd->callback([args] {
    auto traces = comm::readTraceDir(args->dir, args->n);
    if (args->json) {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& t : traces) j.push_back(comm::traceToJson(t));
      std::cout << j.dump(2) << std::endl;
      return;
    }
    std::string div = comm::diagnoseDivergence(traces);
    std::cout << (div.empty() ? "all ranks agree on their last collective" : "divergence: " + div) << "\n"
              << comm::formatTraceTable(traces, args->last);
  });
}

}  // namespace moe::cli

namespace moe::cli {
MOE_REGISTER(Command, FunctionCommand, "traces", moe::cli::addTracesCommand);
}  // namespace moe::cli
