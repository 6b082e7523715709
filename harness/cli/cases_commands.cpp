// `moe-harness run | list | validate | describe`: the case-file commands.
#include "harness/cli/cases_commands.h"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>

#include "harness/suite/case_file.h"
#include "harness/suite/runner.h"
#include "harness/cli/commands.h"
#include "common/error.h"
#include "reference/model/config.h"
#include "reference/placement/layout.h"
#include "reference/plan/plan.h"
#include "reports/printer.h"

namespace moe::cases {
namespace fs = std::filesystem;
namespace {

// Which runs a command works on.
struct Selection {
  std::vector<std::string> paths;
  std::string filter;                       // regex searched in the run id
  std::vector<std::string> ids;             // exact ids
  std::vector<std::string> labels;          // a run needs every one of them
  std::vector<std::string> excludeLabels;   // a run with any of them is left out
};

void addSelectionOptions(CLI::App* cmd, Selection& s) {
  cmd->add_option("cases", s.paths, "case files or directories (default: the shipped cases/)");
  cmd->add_option("--filter", s.filter, "only runs whose id matches this regular expression");
  cmd->add_option("--id", s.ids, "only the run with exactly this id (repeatable)");
  cmd->add_option("--label", s.labels, "only runs carrying this label (repeatable: all of them)");
  cmd->add_option("--exclude-label", s.excludeLabels, "leave out runs carrying this label (repeatable)");
}

struct Loaded {
  std::vector<CaseFile> cases;
  std::vector<SuiteItem> items;
};

// --filter as a regular expression; a malformed one is a user error naming it.
std::regex filterRegex(const std::string& filter) {
  try {
    return std::regex(filter);
  } catch (const std::regex_error& e) {
    fail("--filter: '", filter, "' is not a valid regular expression (", e.what(), ")");
  }
}

bool selected(const Selection& s, const std::string& id, const std::vector<std::string>& labels) {
  if (!s.filter.empty() && !std::regex_search(id, filterRegex(s.filter))) return false;
  if (!s.ids.empty() && std::find(s.ids.begin(), s.ids.end(), id) == s.ids.end()) return false;
  auto has = [&](const std::string& l) { return std::find(labels.begin(), labels.end(), l) != labels.end(); };
  for (const auto& l : s.labels)
    if (!has(l)) return false;
  for (const auto& l : s.excludeLabels)
    if (has(l)) return false;
  return true;
}

// Loads every case of the selection; `cases` owns what the items point to.
std::unique_ptr<Loaded> load(const Selection& s) {
  auto out = std::make_unique<Loaded>();
  const auto files = findCaseFiles(s.paths.empty() ? std::vector<std::string>{defaultCasesDir()} : s.paths);
  for (const auto& f : files) out->cases.push_back(loadCaseFile(f));
  for (const auto& c : out->cases) {
    if (!c.error.empty()) {
      if (selected(s, c.name, c.labels)) out->items.push_back({nullptr, &c});
      continue;
    }
    for (const auto& r : c.runs)
      if (selected(s, r.id, r.labels)) out->items.push_back({&r, nullptr});
  }
  return out;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

// ---- run ------------------------------------------------------------------
void addRunCommandImpl(CLI::App& app) {
  struct Args {
    Selection sel;
    std::string backend, device, report, cache;
    std::string iface;
    std::string spawn;  // "" = MOE_HARNESS_SPAWN, else fork
    int jobs = 0;       // 0 = defaultRunJobs()
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("run", "Run conformance cases, each run in its own launched job, and write reports");
  addSelectionOptions(cmd, a->sel);
  cmd->add_option("--backend", a->backend, "override every case's backend")->check(CLI::IsMember({"gloo", "nccl"}));
  cmd->add_option("--device", a->device,
                  "override every case's device lane (default: the case's, else the backend's: gloo cpu, nccl cuda)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--report", a->report, "write report.json, report.md, report.html and junit.xml (and per-run files) here");
  cmd->add_option("--jobs,-j", a->jobs,
                  "runs in parallel (default: twice the number of cores; a run waits in collectives most of its time)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--reference-cache", a->cache, "directory of cached single-device references (default: in the report or a temp dir)");
  cmd->add_option("--iface", a->iface,
                  "network interface or address each job's store listens on and its Gloo ranks bind (default loopback)");
  cmd->add_option("--spawn", a->spawn,
                  "how ranks start: fork (from the fork server started with this process: no libtorch start-up per "
                  "rank) or exec (a fresh moe-harness per rank); default: MOE_HARNESS_SPAWN, else fork")
      ->check(CLI::IsMember({"exec", "fork"}));
  cmd->callback([a] {
    auto loaded = load(a->sel);
    if (loaded->items.empty()) fail("no case runs selected (", loaded->cases.size(), " case files read)");
    RunnerOptions o;
    if (a->jobs == 0) a->jobs = defaultRunJobs();
    o.jobs = a->jobs;
    o.backend = a->backend;
    o.device = a->device;
    o.workDir = a->report;
    o.referenceCache = a->cache;
    o.iface = a->iface;
    o.spawn = a->spawn.empty() ? launch::spawnModeFromEnvironment(launch::SpawnMode::kFork)
                               : launch::parseSpawnMode(a->spawn, "--spawn");
    // report.json after every finished run: a killed suite (a nightly past
    // its time limit) leaves a valid report of the runs that finished.
    if (!a->report.empty())
      o.onRunFinished = [dir = a->report](const reports::Report& partial) { reports::writeReport(partial, dir, "json"); };
    o.selection = {{"cases", a->sel.paths.empty() ? std::vector<std::string>{defaultCasesDir()} : a->sel.paths},
                   {"filter", a->sel.filter},
                   {"ids", a->sel.ids},
                   {"labels", a->sel.labels},
                   {"exclude_labels", a->sel.excludeLabels}};
    std::cerr << "moe-harness run: " << loaded->items.size() << " run(s) from " << loaded->cases.size()
              << " case file(s), " << a->jobs << " job(s)" << std::endl;
    const auto report = runSuite(loaded->items, o);
    if (!a->report.empty()) {
      for (const auto& p : reports::writeReports(report, a->report)) std::cerr << "wrote " << p << "\n";
    }
    const auto t = report.totals();
    if (t.fail + t.error > 0) throw cli::CommandExit{1};
    if (t.skip == t.total()) throw cli::CommandExit{77};  // ctest SKIP_RETURN_CODE: nothing ran
  });
}

// ---- list -----------------------------------------------------------------
// The ctest include file: every run as a gloo test and an nccl test.
void writeCtestFile(const Loaded& l, const std::string& path, const std::string& harness, const std::string& cache) {
  std::ofstream os(path + ".tmp");
  os << "# Generated by `moe-harness list --ctest`; do not edit.\n";
  auto quoted = [](const std::string& s) { return "[==[" + s + "]==]"; };
  for (const auto& c : l.cases) {
    if (!c.error.empty()) {
      // A broken case file is a failing test, never a silently missing one.
      os << "add_test(" << quoted(c.name) << " " << quoted(harness) << " run " << quoted(c.path) << ")\n";
      os << "set_tests_properties(" << quoted(c.name) << " PROPERTIES LABELS gloo)\n";
      continue;
    }
    for (const auto& r : c.runs) {
      const int timeout = static_cast<int>(r.timeoutSeconds) + 60;
      for (const std::string backend : {"gloo", "nccl"}) {
        const std::string name = backend == "gloo" ? r.id : r.id + ".nccl";
        std::vector<std::string> labels = {backend == "gloo" ? "gloo" : "multigpu"};
        labels.insert(labels.end(), r.labels.begin(), r.labels.end());
        os << "add_test(" << quoted(name) << " " << quoted(harness) << " run " << quoted(c.path) << " --id "
           << quoted(r.id) << " --backend " << backend << " --reference-cache " << quoted(cache) << ")\n";
        os << "set_tests_properties(" << quoted(name) << " PROPERTIES LABELS " << quoted(join(labels, ";"))
           << " TIMEOUT " << timeout << " SKIP_RETURN_CODE 77 PROCESSORS " << std::min(r.worldSize, 2);
        // One GPU per rank, allocated by ctest when it is given a resource
        // spec (`make test-gpu`), so `ctest -j` never oversubscribes GPUs.
        if (backend == "nccl") os << " RESOURCE_GROUPS " << quoted(moe::str(r.worldSize, ",gpus:1"));
        // Cases waiting for run-plan options of another branch stay listed
        // but disabled until the lead removes the label.
        if (r.hasLabel("needs-dp")) os << " DISABLED TRUE";
        os << ")\n";
      }
    }
  }
  os.close();
  fs::rename(path + ".tmp", path);
}

void addListCommandImpl(CLI::App& app) {
  struct Args {
    Selection sel;
    std::string ctest, harness, cache;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("list", "List the runs of the cases (id, ranks, mesh, plan, labels)");
  addSelectionOptions(cmd, a->sel);
  cmd->add_option("--ctest", a->ctest, "write a ctest include file registering every run (gloo and nccl) to FILE");
  cmd->add_option("--harness", a->harness, "with --ctest: the moe-harness binary the tests run");
  cmd->add_option("--reference-cache", a->cache, "with --ctest: the reference cache the tests share");
  cmd->callback([a] {
    auto l = load(a->sel);
    if (!a->ctest.empty()) {
      std::string harness = a->harness;
      if (harness.empty()) harness = fs::read_symlink("/proc/self/exe").string();
      const std::string cache = a->cache.empty() ? fs::path(a->ctest).parent_path().string() + "/reference-cache" : a->cache;
      writeCtestFile(*l, a->ctest, harness, cache);
      return;
    }
    for (const auto& item : l->items) {
      if (item.brokenCase) {
        std::cout << "ERROR " << item.brokenCase->name << ": " << item.brokenCase->error << "\n";
        continue;
      }
      const RunSpec& r = *item.run;
      std::cout << r.id << "  ranks " << r.worldSize << "  mesh " << r.mesh.dump() << "  plan "
                << (r.planSource == "inline" ? "inline" : r.planSource.substr(0, r.planSource.find(' '))) << "  "
                << r.wrapper << "/" << r.loading << "  labels [" << join(r.labels, ",") << "]\n";
    }
    std::cout << l->items.size() << " run(s)" << std::endl;
  });
}

// ---- validate -------------------------------------------------------------
void addValidateCommandImpl(CLI::App& app) {
  auto paths = std::make_shared<std::vector<std::string>>();
  auto* cmd = app.add_subcommand("validate", "Check case files against the schema and semantically, without running");
  cmd->add_option("cases", *paths, "case files or directories")->required();
  cmd->callback([paths] {
    int bad = 0, runs = 0;
    const auto files = findCaseFiles(*paths);
    for (const auto& f : files) {
      const CaseFile c = loadCaseFile(f);
      if (c.error.empty()) {
        std::cout << "ok     " << f << " (" << c.runs.size() << " run(s))\n";
        runs += static_cast<int>(c.runs.size());
      } else {
        std::cout << "ERROR  " << c.error << "\n";
        ++bad;
      }
    }
    std::cout << files.size() << " case file(s), " << runs << " run(s), " << bad << " invalid" << std::endl;
    if (bad) throw cli::CommandExit{1};
  });
}

// ---- describe -------------------------------------------------------------
void describeRun(const RunSpec& r, std::ostream& os) {
  os << r.id << ": " << r.description << "\n";
  os << "  world " << r.worldSize << ", backend " << r.backend << ", mesh " << r.mesh.dump() << ", plan " << r.planSource
     << ", wrapper " << r.wrapper << (r.fsdpExperts.empty() ? "" : " (experts: " + r.fsdpExperts + ")") << ", loading "
     << r.loading << ", experts " << r.model.value("experts_implementation", "grouped") << "\n";
  os << "  " << r.dtype << ", " << r.steps << " steps, seed " << r.seed << ", batch " << r.batchSize << " x " << r.seqLen
     << ", tolerance " << r.tolerance.toJson().dump() << ", checks " << (r.checks.empty() ? std::string("all") : join(r.checks, ",")) << ", labels ["
     << join(r.labels, ",") << "]\n";
  std::vector<mesh::MeshDim> dims;
  for (const auto& [k, v] : r.mesh.items()) dims.push_back({k, v.get<int>()});
  const mesh::MeshShape shape(dims, r.worldSize);
  os << "  ranks:";
  for (int rank = 0; rank < r.worldSize; ++rank) {
    os << " " << rank << "=(";
    const auto c = shape.coordsOf(rank);
    for (size_t d = 0; d < c.size(); ++d) os << (d ? "," : "") << dims[d].name << c[d];
    os << ")";
  }
  os << "\n";
  const auto cfg = ref::ModelConfig::fromJson(r.model);
  const auto applied = plan::applyPlan(plan::Plan::fromJson(r.plan), cfg, shape);
  std::vector<int> sizes;
  for (const auto& d : dims) sizes.push_back(d.size);
  os << "  parameter | style | placements | local shape per rank\n";
  for (const auto& p : applied.params) {
    os << "    " << p.name << " | " << (p.style.empty() ? "-" : p.style) << " | " << ref::toString(p.placements) << " |";
    std::string prev;
    for (int rank = 0; rank < r.worldSize; ++rank) {
      const auto local = ref::localShape(p.globalShape, p.placements, sizes, shape.coordsOf(rank));
      os << " " << rank << ":" << nlohmann::json(local).dump();
    }
    os << "\n";
  }
  for (const auto& [module, styles] : applied.moduleStyles) os << "    module " << module << ": " << styles << "\n";
}

void addDescribeCommandImpl(CLI::App& app) {
  struct Args {
    std::vector<std::string> paths;
    std::string filter;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("describe", "The expanded runs of a case, the mesh and each rank's placements, without training");
  cmd->add_option("cases", a->paths, "case files or directories")->required();
  cmd->add_option("--filter", a->filter, "only runs whose id matches this regular expression");
  cmd->callback([a] {
    int bad = 0;
    for (const auto& f : findCaseFiles(a->paths)) {
      const CaseFile c = loadCaseFile(f);
      if (!c.error.empty()) {
        std::cout << "ERROR " << c.error << "\n";
        ++bad;
        continue;
      }
      std::cout << c.path << ": case " << c.name << ", " << c.runs.size() << " run(s)\n";
      for (const auto& r : c.runs) {
        if (!a->filter.empty() && !std::regex_search(r.id, filterRegex(a->filter))) continue;
        describeRun(r, std::cout);
      }
    }
    if (bad) throw cli::CommandExit{1};
  });
}

}  // namespace

void addRunCommand(CLI::App& app) { addRunCommandImpl(app); }
void addListCommand(CLI::App& app) { addListCommandImpl(app); }
void addValidateCommand(CLI::App& app) { addValidateCommandImpl(app); }
void addDescribeCommand(CLI::App& app) { addDescribeCommandImpl(app); }

}  // namespace moe::cases

namespace moe::cli {
MOE_REGISTER(Command, FunctionCommand, "run", moe::cases::addRunCommand);
MOE_REGISTER(Command, FunctionCommand, "list", moe::cases::addListCommand);
MOE_REGISTER(Command, FunctionCommand, "validate", moe::cases::addValidateCommand);
MOE_REGISTER(Command, FunctionCommand, "describe", moe::cases::addDescribeCommand);
}  // namespace moe::cli
