// bench_checkpoint: save and load throughput of the sharded distributed
// checkpoint (issue 19), PER RANK, for the largest shipped model config.
// Run: build/bin/bench_checkpoint (about a minute), or `make bench`.
//
// The config: every cases/configs/tiny_*.json is sized first (a one-rank job
// counts the elements of its parameters) and each scenario uses the largest
// that can run its layouts (tiny_deepseek_v3 for ep and tp; deepseek_v3
// runs no fsdp / zero3 wrapper, so the wrapper scenarios take the largest
// other config); MOE_BENCH_CKPT_CONFIG=<path> uses that one for every
// scenario instead. The plans follow
// the config's family (qwen3_moe: ep / moe_tp, deepseek_v3: ep /
// deepseek_v3_moe_tp, mixtral: ep / mixtral_moe_tp, gpt_oss: gpt_oss_ep /
// gpt_oss_moe_tp).
//
//  BM_SaveLoad/<scenario>   one iteration = a SAVE job on one layout, then
//                           a LOAD job on another layout (the resharding a
//                           resume does), each N forked gloo ranks:
//    0  ep=2 (2 ranks)               -> tp=2 (2 ranks)
//    1  fsdp over dp=4 (4 ranks)     -> zero3 over dp=2 (2 ranks)
//    2  ep=4 (4 ranks)               -> ep=2 (2 ranks)
//    3  zero3 over dp=2 (2 ranks)    -> fsdp over dp=4 (4 ranks)
//
// Save, on every rank: the model is initialised and trained one step on the
// layout (so the AdamW moments exist), then parallel::saveDistCheckpoint is
// timed from a barrier to its return: the rank's pieces serialised, hashed
// and written (temporary name + rename), the three agreements, and on rank
// 0 also INTENT, metadata.json and COMPLETE. save MB/s of a rank = bytes of
// its own rank file / its seconds.
// Load, on every rank: io::DistCheckpointSource (metadata.json, every rank
// file's header) and parallel::loadResumeState (the rank's slices of the
// parameters and both moments for its placements, each piece touched read
// whole once and its hash verified) are timed from a barrier. load MB/s of a
// rank = bytes it read (the rchar delta of /proc/self/io: every read and
// pread of the metadata, the headers and the pieces) / its seconds.
// Neither includes training, the trainer's construction nor putting the
// moments into a wrapper's layout (no I/O). The files are in the page cache
// (nothing calls fsync): these numbers are the harness's serialisation,
// hashing and system-call cost, not a disk's.
//
// Per iteration the reported time is the slowest rank's save + the slowest
// rank's load. Counters: the checkpoint's total bytes (rank files +
// metadata.json) and, over ranks, the min and max MB/s of the median
// iteration per rank. A table per rank is printed after the benchmarks.
// Nothing here asserts a time.
//
// The parent never runs torch code: it only forks (launchLocal) and reads
// the JSON each rank writes. Torch's thread pools would otherwise be started
// before the fork and be unusable in the ranks.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "harness/launch/launcher.h"
#include "harness/launch/rank_env.h"
#include "harness/mesh/device_mesh.h"
#include "reference/io/dist_checkpoint.h"
#include "reference/model/config.h"
#include "reference/model/init.h"
#include "reference/parallel/dist_checkpoint.h"
#include "reference/parallel/dist_model.h"
#include "reference/parallel/loading.h"
#include "reference/plan/plan.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

const std::string kCases = MOE_CASES_DIR;

// One layout a job runs on. `plan`: "ep", "tp" or "none", resolved per
// family by planFile().
struct Layout {
  const char* label;
  int ranks;
  const char* mesh;
  const char* plan;
  const char* wrapper;
};
struct Scenario {
  Layout save, load;
};
const Scenario kScenarios[] = {
    {{"ep=2", 2, R"({"ep":2})", "ep", "none"}, {"tp=2", 2, R"({"tp":2})", "tp", "none"}},
    {{"fsdp dp=4", 4, R"({"dp":4})", "none", "fsdp"}, {"zero3 dp=2", 2, R"({"dp":2})", "none", "zero3"}},
    {{"ep=4", 4, R"({"ep":4})", "ep", "none"}, {"ep=2", 2, R"({"ep":2})", "ep", "none"}},
    {{"zero3 dp=2", 2, R"({"dp":2})", "none", "zero3"}, {"fsdp dp=4", 4, R"({"dp":4})", "none", "fsdp"}},
};

json readJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return json();
  return json::parse(in, nullptr, /*allow_exceptions=*/false);
}

std::string modelType(const std::string& config) { return readJson(config).value("model_type", std::string()); }

std::string planFile(const std::string& config, const std::string& kind) {
  const std::string family = modelType(config);
  std::string name = "replicated";
  if (kind == "ep") name = family == "gpt_oss" ? "gpt_oss_ep" : "ep";
  if (kind == "tp")
    name = family == "qwen3_moe" ? "moe_tp" : family == "deepseek_v3" ? "deepseek_v3_moe_tp" : family + "_moe_tp";
  return kCases + "/plans/" + name + ".json";
}

// Bytes this process has read / written through system calls so far.
struct ProcIo {
  int64_t rchar = 0, wchar = 0;
};
ProcIo procIo() {
  ProcIo p;
  std::ifstream in("/proc/self/io");
  std::string key;
  int64_t value = 0;
  while (in >> key >> value) {
    if (key == "rchar:") p.rchar = value;
    if (key == "wchar:") p.wchar = value;
  }
  return p;
}

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void writeJson(const std::string& path, const json& j) { std::ofstream(path) << j.dump() << "\n"; }

// ---- the ranks ------------------------------------------------------------

struct RankSetup {
  std::shared_ptr<moe::comm::Communicator> world;
  moe::ref::ModelConfig cfg;
  std::unique_ptr<moe::mesh::DeviceMesh> mesh;
  moe::plan::AppliedPlan applied;
};

RankSetup setUp(const std::string& config, const Layout& l) {
  at::set_num_threads(1);  // the ranks share the machine's cores
  RankSetup s;
  s.world = moe::launch::initWorld(moe::launch::rankEnvFromEnvironment(), moe::comm::CommOptions{});
  s.cfg = moe::ref::ModelConfig::fromFile(config);
  s.mesh = std::make_unique<moe::mesh::DeviceMesh>(s.world, moe::mesh::DeviceMesh::parse(l.mesh));
  s.applied = moe::plan::applyPlan(moe::plan::Plan::fromFile(planFile(config, l.plan)), s.cfg, s.mesh->shape());
  return s;
}

// Trains one step on `l` and saves; writes <out>/save<rank>.json.
int saveRank(const std::string& config, const Layout& l, const std::string& dir, const std::string& out) {
  auto s = setUp(config, l);
  moe::ref::TrainOptions t;  // the cases' defaults: batch 4 x 16, fp32, seed 0
  t.steps = 1;
  std::map<std::string, at::Tensor> init;
  for (const auto& kv : moe::ref::initParameters(s.cfg, t.seed)) init[kv.key()] = kv.value();
  moe::io::MapTensorSource source(init, "init(seed 0)");
  moe::parallel::LoadOptions lo;
  lo.source = &source;
  lo.mesh = s.mesh.get();
  lo.plan = &s.applied;
  moe::parallel::DistOptions d;
  d.wrapper = l.wrapper;
  moe::parallel::DistTrainer trainer(s.cfg, *s.mesh, s.applied, moe::parallel::loadParams(lo), t, d);
  trainer.step();
  // Collective under zero3 (it gathers its flat partitions): before the clock.
  const auto params = trainer.paramShards();
  const auto m = trainer.optimizerShards(false);
  const auto v = trainer.optimizerShards(true);
  moe::parallel::DistSaveOptions so;
  so.dir = dir;
  so.step = 1;
  so.info = {{"step", 1}, {"config", s.cfg.toJson()}, {"world_size", l.ranks}, {"mesh", l.mesh}};
  s.world->barrier();
  const ProcIo io0 = procIo();
  const auto t0 = Clock::now();
  moe::parallel::saveDistCheckpoint(so, *s.mesh, params, m, v);
  const double seconds = since(t0);
  const ProcIo io1 = procIo();
  const int rank = s.world->rank();
  writeJson(out + "/save" + std::to_string(rank) + ".json",
            {{"rank", rank},
             {"seconds", seconds},
             {"bytes", fs::file_size(dir + "/" + moe::io::rankFileName(rank))},
             {"wchar", io1.wchar - io0.wchar}});
  return 0;
}

// Loads the checkpoint in `dir` onto `l`; writes <out>/load<rank>.json.
int loadRank(const std::string& config, const Layout& l, const std::string& dir, const std::string& out) {
  auto s = setUp(config, l);
  s.world->barrier();
  const ProcIo io0 = procIo();
  const auto t0 = Clock::now();
  moe::io::DistCheckpointSource source(dir);
  const auto state = moe::parallel::loadResumeState(source, source.meta().info, s.applied, *s.mesh);
  const double seconds = since(t0);
  const ProcIo io1 = procIo();
  int64_t payload = 0;  // the fp32 state the rank ends up with
  for (const auto* map : {&state.params, &state.expAvg, &state.expAvgSq})
    for (const auto& kv : *map) payload += kv.value().numel() * static_cast<int64_t>(kv.value().element_size());
  const int rank = s.world->rank();
  writeJson(out + "/load" + std::to_string(rank) + ".json",
            {{"rank", rank}, {"seconds", seconds}, {"bytes", io1.rchar - io0.rchar}, {"payload_bytes", payload}});
  return 0;
}

// Counts the parameter elements of every config; writes <out>/sizes.json.
int sizeRank(const std::vector<std::string>& configs, const std::string& out) {
  at::set_num_threads(1);
  json sizes = json::object();
  for (const auto& c : configs) {
    int64_t n = 0;
    for (const auto& kv : moe::ref::initParameters(moe::ref::ModelConfig::fromFile(c), 0)) n += kv.value().numel();
    sizes[c] = n;
  }
  writeJson(out + "/sizes.json", sizes);
  return 0;
}

// ---- the parent -----------------------------------------------------------

std::string tempDir(const char* tag) {
  std::string t = (fs::temp_directory_path() / (std::string("bench_checkpoint_") + tag + "_XXXXXX")).string();
  if (!::mkdtemp(t.data())) return "";
  return t;
}

// Runs `body` on `ranks` forked ranks; "" or the job's failure.
std::string runJob(int ranks, const std::function<int(const moe::launch::RankContext&)>& body) {
  std::ostringstream out, err;
  moe::launch::LaunchOptions o;
  o.nranks = ranks;
  o.timeout = std::chrono::seconds(300);
  o.out = &out;
  o.err = &err;
  o.quiet = true;
  const auto r = moe::launch::launchLocal(o, body);
  if (r.ok) return "";
  std::string e = err.str();
  if (e.size() > 2000) e = "..." + e.substr(e.size() - 2000);
  return "job failed (exit " + std::to_string(r.exitCode()) + "): " + r.summary + "\n" + e;
}

// Every config's parameter element count (a one-rank job sizes them: the
// parent runs no torch code); or the MOE_BENCH_CKPT_CONFIG one alone.
struct Sizes {
  std::map<std::string, int64_t> elements;  // config path -> elements
  std::string error;
};
const Sizes& configSizes() {
  static const Sizes sizes = [] {
    Sizes z;
    std::vector<std::string> configs;
    if (const char* env = std::getenv("MOE_BENCH_CKPT_CONFIG")) {
      configs.push_back(env);
    } else {
      // The shipped tiny configs only: sizing initialises each config whole,
      // and the realistic-width ones (qwen3_30b_a3b_*, for the nightly
      // memory cases) hold up to 11 GB of parameters.
      for (const auto& e : fs::directory_iterator(kCases + "/configs"))
        if (e.path().extension() == ".json" && e.path().filename().string().rfind("tiny_", 0) == 0)
          configs.push_back(e.path().string());
      std::sort(configs.begin(), configs.end());
    }
    const std::string out = tempDir("size");
    z.error = runJob(1, [&](const moe::launch::RankContext&) { return sizeRank(configs, out); });
    const json j = readJson(out + "/sizes.json");
    if (z.error.empty() && !j.is_object()) z.error = "no sizes.json in " + out;
    if (z.error.empty())
      for (const auto& [path, n] : j.items()) z.elements[path] = n.get<int64_t>();
    fs::remove_all(out);
    return z;
  }();
  return sizes;
}

// The largest config that can run both layouts of `sc`: deepseek_v3 runs no
// data-parallel wrapper (its router's correction bias is updated by the
// model's own rule, which fsdp and zero3 cannot hand out: docs/families.md),
// so the wrapper scenarios take the largest of the other families.
std::pair<std::string, int64_t> configFor(const Scenario& sc) {
  const bool wrapper = std::string(sc.save.wrapper) != "none" || std::string(sc.load.wrapper) != "none";
  std::pair<std::string, int64_t> best{"", 0};
  for (const auto& [path, n] : configSizes().elements) {
    if (wrapper && modelType(path) == "deepseek_v3" && !std::getenv("MOE_BENCH_CKPT_CONFIG")) continue;
    if (n > best.second) best = {path, n};
  }
  return best;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// Per scenario, per rank: every iteration's {seconds, bytes}.
struct RankSamples {
  std::vector<double> seconds;
  int64_t bytes = 0;
  std::vector<double> mbps() const {
    std::vector<double> out;
    for (double s : seconds) out.push_back(s > 0 ? static_cast<double>(bytes) / 1e6 / s : 0);
    return out;
  }
};
struct ScenarioSamples {
  std::map<int, RankSamples> save, load;
  int64_t totalBytes = 0;
  std::string config;
  int64_t elements = 0;
};
std::map<int, ScenarioSamples> g;

// Adds a job's per-rank JSON (<out>/<what><r>.json) to `into`; the slowest
// rank's seconds.
double collect(const std::string& out, const char* what, int ranks, std::map<int, RankSamples>& into) {
  double slowest = 0;
  for (int r = 0; r < ranks; ++r) {
    const json j = readJson(out + "/" + what + std::to_string(r) + ".json");
    const double s = j.value("seconds", 0.0);
    into[r].seconds.push_back(s);
    into[r].bytes = j.value("bytes", int64_t{0});
    slowest = std::max(slowest, s);
  }
  return slowest;
}

void BM_SaveLoad(benchmark::State& state) {
  if (!configSizes().error.empty()) {
    state.SkipWithError(("sizing the configs: " + configSizes().error).c_str());
    return;
  }
  const int index = static_cast<int>(state.range(0));
  const Scenario& sc = kScenarios[index];
  const auto [config, elements] = configFor(sc);
  if (config.empty()) {
    state.SkipWithError("no config can run this scenario");
    return;
  }
  state.SetLabel(fs::path(config).filename().string() + " " + sc.save.label + " -> " + sc.load.label);
  auto& samples = g[index];
  samples.config = config;
  samples.elements = elements;
  for (auto _ : state) {
    const std::string out = tempDir("run"), dir = out + "/ckpt";
    std::string error = runJob(sc.save.ranks, [&](const moe::launch::RankContext&) {
      return saveRank(config, sc.save, dir, out);
    });
    if (error.empty())
      error = runJob(sc.load.ranks, [&](const moe::launch::RankContext&) { return loadRank(config, sc.load, dir, out); });
    if (!error.empty()) {
      fs::remove_all(out);
      state.SkipWithError(error.c_str());
      return;
    }
    int64_t total = 0;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors" || e.path().filename() == moe::io::kDistMetadataFile)
        total += static_cast<int64_t>(e.file_size());
    samples.totalBytes = total;
    state.SetIterationTime(collect(out, "save", sc.save.ranks, samples.save) +
                           collect(out, "load", sc.load.ranks, samples.load));
    fs::remove_all(out);
  }
  auto range = [](const std::map<int, RankSamples>& ranks, double& lo, double& hi) {
    lo = 1e300;
    hi = 0;
    for (const auto& [r, s] : ranks) {
      const double m = median(s.mbps());
      lo = std::min(lo, m);
      hi = std::max(hi, m);
    }
  };
  double lo = 0, hi = 0;
  range(samples.save, lo, hi);
  state.counters["save_MBps_rank_min"] = lo;
  state.counters["save_MBps_rank_max"] = hi;
  range(samples.load, lo, hi);
  state.counters["load_MBps_rank_min"] = lo;
  state.counters["load_MBps_rank_max"] = hi;
  state.counters["ckpt_bytes"] = static_cast<double>(samples.totalBytes);
  state.counters["elements"] = static_cast<double>(elements);
}
BENCHMARK(BM_SaveLoad)->DenseRange(0, 3)->UseManualTime()->Iterations(5)->Unit(benchmark::kMillisecond);

void printSummary() {
  if (g.empty()) return;
  std::printf("\nParameter elements per config:");
  for (const auto& [path, n] : configSizes().elements)
    std::printf(" %s %lld;", fs::path(path).filename().string().c_str(), static_cast<long long>(n));
  std::printf("\nPer rank (median of the iterations; save bytes: its rank file, load bytes: read by it):\n");
  std::printf("%-32s %-5s %-4s %12s %10s %9s\n", "scenario", "phase", "rank", "bytes", "ms", "MB/s");
  for (const auto& [index, s] : g) {
    const Scenario& sc = kScenarios[index];
    const std::string name = std::to_string(index) + " " + sc.save.label + " -> " + sc.load.label;
    for (const auto& [phase, ranks] : {std::pair{"save", &s.save}, std::pair{"load", &s.load}})
      for (const auto& [r, rs] : *ranks)
        std::printf("%-32s %-5s %-4d %12lld %10.2f %9.1f\n", name.c_str(), phase, r,
                    static_cast<long long>(rs.bytes), 1e3 * median(rs.seconds), median(rs.mbps()));
    std::printf("%-32s %s (%lld elements): checkpoint %lld bytes (rank files + metadata.json)\n", name.c_str(),
                fs::path(s.config).filename().string().c_str(), static_cast<long long>(s.elements),
                static_cast<long long>(s.totalBytes));
  }
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
