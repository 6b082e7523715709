// bench_suite: what a conformance run costs, side by side in one process run
// (issue 20 point 4). Run: build/bin/bench_suite (a few minutes: it runs the
// whole default suite once).
//
//  BM_SingleDeviceStep        one training step of the tiny model
//                             (cases/configs/tiny_moe.json, batch 4 x 16,
//                             fp32, one intra-op thread as every rank has),
//                             in this process.
//  BM_DistributedStep/<ranks> the median step of the case run ep<ranks>.fp32
//                             (`moe-harness run --id`), from its report's
//                             timings.step_seconds: the same model and
//                             batch, split over the ranks, with verification
//                             and recording on, as users run it.
//  BM_HarnessJobOverhead      that run's wall time outside loading,
//                             reference, steps and checks: spawn,
//                             rendezvous, teardown and reading the result
//                             (report.json phases spawn + rendezvous +
//                             report + other).
//  BM_RunSpawn/fork:<0|1>     the ep4.fp32 run with `run --spawn exec` (0)
//                             and `--spawn fork` (1, the default): its wall,
//                             job overhead and spawn phase, side by side.
//  BM_PythonAnchor            the Python pattern the harness replaces
//                             (bench_process.h): mp.spawn of 4 processes,
//                             init_process_group("gloo"), one all_reduce.
//  BM_DefaultSuite            `moe-harness run` of the default suite (every
//                             case run not labelled nightly or needs-dp),
//                             run's default --jobs (twice the cores), as
//                             `make run` runs it, with a fresh
//                             reference cache: runs and runs per second.
//
// After the benchmarks, a summary prints the ratios measured in this run:
// distributed / single-device step, harness job overhead / Python anchor,
// runs per second, against the goals (>= 80 runs in <= 30 s; a step
// at most 5x the single-device step). Nothing here asserts a time.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness/bench/bench_process.h"
#include "reference/model/config.h"
#include "reference/model/init.h"
#include "reference/train/trainer.h"

namespace {

namespace fs = std::filesystem;
using moe::bench::runCommand;

const std::string kHarness = MOE_HARNESS_BIN;
const std::string kCases = MOE_CASES_DIR;

// What the summary prints, filled by the benchmarks that ran.
std::map<std::string, double> g;

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

std::string tempDir(const char* tag) {
  std::string t = std::string("/tmp/bench_suite_") + tag + "_XXXXXX";
  std::vector<char> buf(t.begin(), t.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) return "";
  return buf.data();
}

// `moe-harness run` with `args` into a fresh report directory; the parsed
// report.json, or an error text in `error`.
nlohmann::json runSuite(const std::vector<std::string>& args, std::string& error, double& wall) {
  const std::string dir = tempDir("report");
  std::vector<std::string> argv = {kHarness, "run", kCases, "--report", dir, "--reference-cache", dir + "/cache"};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto t0 = moe::bench::Clock::now();
  auto r = runCommand(argv, std::chrono::seconds(1800));
  wall = std::chrono::duration<double>(moe::bench::Clock::now() - t0).count();
  nlohmann::json j;
  std::ifstream in(dir + "/report.json");
  if (r.exitCode != 0) error = "moe-harness run exited with " + std::to_string(r.exitCode) + ": " + r.output;
  else if (!in) error = "no report.json in " + dir;
  else j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (error.empty() && j.is_discarded()) error = "unreadable report.json in " + dir;
  fs::remove_all(dir);
  return j;
}

void BM_SingleDeviceStep(benchmark::State& state) {
  at::set_num_threads(1);
  auto config = moe::ref::ModelConfig::fromFile(kCases + "/configs/tiny_moe.json");
  moe::ref::TrainOptions o;  // the case defaults: batch 4, sequence 16, fp32
  o.batchSize = 4;
  o.seqLen = 16;
  moe::ref::Trainer trainer(config, moe::ref::initParameters(config, /*seed=*/0), o);
  std::vector<double> times;
  for (auto _ : state) {
    const auto t0 = moe::bench::Clock::now();
    benchmark::DoNotOptimize(trainer.step().loss);
    times.push_back(std::chrono::duration<double>(moe::bench::Clock::now() - t0).count());
  }
  g["single_step_s"] = median(times);
  state.counters["median_ms"] = 1e3 * median(times);
}
BENCHMARK(BM_SingleDeviceStep)->Unit(benchmark::kMillisecond)->MinTime(0.5);

// The one run `id` of the default suite with `extra` options of `run`: its
// record in report.json, or false after SkipWithError.
bool runCase(benchmark::State& state, const std::string& id, const std::vector<std::string>& extra,
             nlohmann::json& run) {
  std::string error;
  double wall = 0;
  std::vector<std::string> args = {"--id", id, "--jobs", "1"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto j = runSuite(args, error, wall);
  if (error.empty() && (j["runs"].size() != 1 || j["runs"][0]["status"] != "pass"))
    error = "run " + id + " did not pass: " + j.dump().substr(0, 500);
  if (!error.empty()) {
    state.SkipWithError(error.c_str());
    return false;
  }
  run = j["runs"][0];
  if (!run["timings"].contains("wall_seconds")) run["timings"]["wall_seconds"] = wall;
  return true;
}

// A run's wall time outside loading, reference, steps and checks.
double jobOverhead(const nlohmann::json& run) {
  double overhead = 0;
  for (const char* p : {"spawn", "rendezvous", "report", "other"}) overhead += run["timings"]["phases"].value(p, 0.0);
  return overhead;
}

// state.range(0): ranks of the ep<ranks>.fp32 case run.
void BM_DistributedStep(benchmark::State& state) {
  const std::string id = "ep" + std::to_string(state.range(0)) + ".fp32";
  for (auto _ : state) {
    nlohmann::json run;
    if (!runCase(state, id, {}, run)) return;
    std::vector<double> steps = run["timings"]["step_seconds"].get<std::vector<double>>();
    const double step = median(steps);
    state.SetIterationTime(step);
    const double overhead = jobOverhead(run);
    g["dist_step_s/" + std::to_string(state.range(0))] = step;
    g["overhead_s/" + std::to_string(state.range(0))] = overhead;
    g["run_wall_s/" + std::to_string(state.range(0))] = run["timings"]["wall_seconds"].get<double>();
    state.counters["median_step_ms"] = 1e3 * step;
    state.counters["job_overhead_s"] = overhead;
    state.counters["steps"] = static_cast<double>(steps.size());
  }
}
BENCHMARK(BM_DistributedStep)->Arg(2)->Arg(4)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);

// How ranks start, side by side: the ep4.fp32 run with `run --spawn exec`
// (state.range(0) = 0: a fresh moe-harness per rank) and `--spawn fork`
// (1: forked from the fork server); the iteration time is the run's wall.
void BM_RunSpawn(benchmark::State& state) {
  const char* spawn = state.range(0) ? "fork" : "exec";
  for (auto _ : state) {
    nlohmann::json run;
    if (!runCase(state, "ep4.fp32", {"--spawn", spawn}, run)) return;
    const double wall = run["timings"]["wall_seconds"].get<double>();
    state.SetIterationTime(wall);
    g[std::string("spawn_overhead_s/") + spawn] = jobOverhead(run);
    g[std::string("spawn_phase_s/") + spawn] = run["timings"]["phases"].value("spawn", 0.0);
    g[std::string("spawn_wall_s/") + spawn] = wall;
    state.counters["job_overhead_s"] = jobOverhead(run);
    state.counters["spawn_phase_s"] = run["timings"]["phases"].value("spawn", 0.0);
  }
}
BENCHMARK(BM_RunSpawn)->ArgName("fork")->Arg(0)->Arg(1)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);

void BM_PythonAnchor(benchmark::State& state) {
  for (auto _ : state) {
    const auto r = moe::bench::runPythonAnchor(MOE_BENCH_PYTHON, 4);
    if (!r.error.empty()) {
      state.SkipWithError(r.error.c_str());
      return;
    }
    state.SetIterationTime(r.seconds);
    g["python_anchor_s"] = r.seconds;
  }
}
BENCHMARK(BM_PythonAnchor)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);

void BM_DefaultSuite(benchmark::State& state) {
  for (auto _ : state) {
    std::string error;
    double wall = 0;
    // run's default --jobs, as `make run` uses it.
    auto j = runSuite({"--exclude-label", "nightly", "--exclude-label", "needs-dp"}, error, wall);
    if (!error.empty()) {
      state.SkipWithError(error.c_str());
      return;
    }
    state.SetIterationTime(wall);
    const double runs = j["totals"]["total"].get<double>(), pass = j["totals"]["pass"].get<double>();
    g["suite_runs"] = runs;
    g["suite_pass"] = pass;
    g["suite_s"] = wall;
    g["suite_jobs"] = j["suite"].value("jobs", 0.0);
    state.counters["runs"] = runs;
    state.counters["passed"] = pass;
    state.counters["runs_per_s"] = runs / wall;
  }
}
BENCHMARK(BM_DefaultSuite)->UseManualTime()->Iterations(1)->Unit(benchmark::kSecond);

void printSummary() {
  auto has = [](const std::string& k) { return g.count(k) > 0; };
  std::printf("\nSummary (one run of bench_suite, side by side):\n");
  if (has("suite_runs"))
    std::printf("  default suite: %.0f runs (%.0f passed) in %.1f s with %.0f jobs = %.2f runs/s (goal: >= 80 runs in "
                "<= 30 s)\n",
                g["suite_runs"], g["suite_pass"], g["suite_s"], g["suite_jobs"], g["suite_runs"] / g["suite_s"]);
  for (int ranks : {2, 4}) {
    const std::string k = "dist_step_s/" + std::to_string(ranks);
    if (has(k) && has("single_step_s"))
      std::printf("  step, ep%d vs one device: %.1f ms vs %.1f ms = %.1fx (goal: <= 5x)\n", ranks, 1e3 * g[k],
                  1e3 * g["single_step_s"], g[k] / g["single_step_s"]);
    const std::string o = "overhead_s/" + std::to_string(ranks);
    if (!has(o)) continue;
    char anchor[128] = "";
    if (has("python_anchor_s"))
      std::snprintf(anchor, sizeof anchor, " (Python mp.spawn anchor, 4 ranks, one all_reduce: %.2f s)",
                    g["python_anchor_s"]);
    std::printf("  job overhead, ep%d run: %.2f s of its %.2f s wall%s\n", ranks, g[o],
                g["run_wall_s/" + std::to_string(ranks)], anchor);
  }
  if (has("spawn_wall_s/exec") && has("spawn_wall_s/fork"))
    std::printf("  ep4 run, ranks exec'd vs forked from the fork server: wall %.2f s vs %.2f s, job overhead %.2f s vs "
                "%.2f s, spawn phase %.3f s vs %.3f s\n",
                g["spawn_wall_s/exec"], g["spawn_wall_s/fork"], g["spawn_overhead_s/exec"], g["spawn_overhead_s/fork"],
                g["spawn_phase_s/exec"], g["spawn_phase_s/fork"]);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  printSummary();
  return 0;
}
