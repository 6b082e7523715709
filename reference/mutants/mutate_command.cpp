// `moe-harness mutate [--mutants A,B] [--report DIR] [--jobs N]`: the
// mutation suite (issue 7). Runs every registered mutant's configurations as
// launched run-plan jobs with --mutant, plus the same configurations
// unmutated, prints the table and writes DIR/mutation.json.
#include "reference/mutants/mutate_command.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "harness/cli/commands.h"
#include "harness/common/error.h"
#include "reference/mutants/mutant_registry.h"

#ifndef MOE_SOURCE_DIR
#define MOE_SOURCE_DIR "."
#endif

namespace moe::mutants {
namespace {

struct MutateArgs {
  std::vector<std::string> mutants;
  std::string report;
  std::string casesDir = std::string(MOE_SOURCE_DIR) + "/cases";
  int jobs = 1;
  double timeout = 240;
  bool noBaseline = false;
  bool list = false;
};

std::string selfExe() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) fail("mutate: cannot resolve /proc/self/exe: ", ec.message());
  return p.string();
}

int runMutate(const MutateArgs& a) {
  if (a.list) {
    for (const auto& m : allMutants())
      std::cout << m.spec.name << " [" << m.spec.intendedCheck << "] " << m.spec.description << "\n  at "
                << m.spec.injectionPoint << "\n";
    return 0;
  }
  std::vector<mutate::MutantSpec> specs;
  if (a.mutants.empty()) {
    specs = mutantSpecs();
  } else {
    for (const auto& n : a.mutants) specs.push_back(findMutant(n).spec);  // validates every name first
  }
  if (!std::filesystem::is_directory(a.casesDir)) fail("mutate: cases directory ", a.casesDir, " does not exist");
  mutate::MutateOptions o;
  o.program = selfExe();
  o.casesDir = a.casesDir;
  o.jobs = a.jobs;
  o.timeoutSeconds = a.timeout;
  o.baseline = !a.noBaseline;
  o.progress = &std::cerr;
  std::cerr << "mutate: " << specs.size() << " mutant(s)" << (o.baseline ? " + unmutated baseline" : "")
            << ", " << a.jobs << " job(s) at a time" << std::endl;
  const mutate::MutationReport report = mutate::runMutations(specs, o);
  mutate::printMutationTable(std::cout, report);
  if (!a.report.empty()) {
    std::filesystem::create_directories(a.report);
    const std::string path = a.report + "/mutation.json";
    std::ofstream out(path);
    if (!out) fail("mutate: cannot write ", path);
    out << mutate::mutationJson(report).dump(2) << "\n";
    std::cout << "wrote " << path << std::endl;
  }
  return report.passed() ? 0 : 1;
}

}  // namespace

void addMutateCommand(CLI::App& app) {
  auto a = std::make_shared<MutateArgs>();
  auto* sub = app.add_subcommand("mutate",
                                 "Run every mutant's configurations (and the unmutated baseline) and report which "
                                 "check killed each mutant");
  sub->add_option("--mutants", a->mutants, "comma-separated mutant names (default: all)")->delimiter(',');
  sub->add_option("--report", a->report, "write DIR/mutation.json");
  sub->add_option("--jobs", a->jobs, "launched jobs at a time")->check(CLI::Range(1, 64))->capture_default_str();
  sub->add_option("--timeout", a->timeout, "seconds per launched job")->capture_default_str();
  sub->add_option("--cases-dir", a->casesDir, "the cases/ folder (configs, plans)")->capture_default_str();
  sub->add_flag("--no-baseline", a->noBaseline, "skip the unmutated configurations");
  sub->add_flag("--list", a->list, "list the mutants and exit");
  sub->callback([a] {
    if (int code = runMutate(*a)) throw cli::CommandExit{code};
  });
}

}  // namespace moe::mutants
