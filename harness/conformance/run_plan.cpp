#include "harness/conformance/run_plan.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <thread>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "common/json_number.h"

#include "harness/checks/check_registry.h"
#include "harness/checks/check_common.h"
#include "harness/checks/checkpoint_checks.h"
#include "harness/checks/comm_check.h"
#include "harness/comm/factory.h"
#include "harness/checks/finite_check.h"
#include "harness/comm/flight_recorder.h"
#include "harness/conformance/reference_cache.h"
#include "harness/conformance/run_plan_memory.h"
#include "harness/conformance/run_result.h"
#include "harness/launch/rank_env.h"
#include "harness/mesh/device_mesh.h"
#include "reference/io/dist_checkpoint.h"
#include "reference/io/expert_layout.h"
#include "reference/io/safetensors.h"
#include "reference/io/sharded_safetensors.h"
#include "reference/model/deepseek_v3.h"
#include "reference/model/init.h"
#include "reference/parallel/dist_checkpoint.h"
#include "reference/parallel/dist_model.h"
#include "reference/parallel/hf_checkpoint.h"
#include "reference/parallel/loading.h"
#include "reference/placement/dist_tensor.h"
#include "reference/plan/plan.h"
#include "reference/train/hub_naming.h"
#include "reference/train/reference_run.h"
#include "reference/model/params.h"
#include "reference/train/init_source.h"
#include "reference/train/trainer.h"

namespace moe::conformance {
using namespace ::moe::ref;
namespace {

// {"loss_abs": x, "rtol": r, "atol": a} (allclose) or {"loss_abs": x,
// "rel_norm": n} (relative norm error): the case's tolerance for this dtype.
checks::ParityTolerance parseTolerance(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("--tolerance: not JSON: ", e.what());
  }
  if (!j.is_object() || !j.contains("loss_abs")) fail("--tolerance: needs an object with loss_abs, got ", text);
  // A non-number is a user error naming the field, not a JSON type error.
  auto num = [&](const char* key) {
    const auto& v = j.at(key);
    if (!v.is_number()) fail("--tolerance: ", key, " must be a number, got ", v.dump(), " in ", text);
    return v.get<double>();
  };
  checks::ParityTolerance t;
  t.lossAbs = num("loss_abs");
  if (j.contains("rel_norm")) {
    t.metric = checks::TensorMetric::kRelNorm;
    t.relNorm = num("rel_norm");
  } else if (j.contains("rtol") && j.contains("atol")) {
    t.metric = checks::TensorMetric::kAllClose;
    t.rtol = num("rtol");
    t.atol = num("atol");
  } else {
    fail("--tolerance: needs rel_norm, or rtol and atol, got ", text);
  }
  return t;
}

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

nlohmann::json countersJson(const checks::CommCounters& c) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& [key, v] : c)
    j.push_back({{"group", key.first}, {"op", comm::opName(key.second)}, {"calls", v.calls},
                 {"bytes_sent", v.bytesSent}, {"bytes_recv", v.bytesRecv}});
  return j;
}

void dumpShards(const std::string& dir, int rank, const std::vector<checks::ParamShard>& shards) {
  std::filesystem::create_directories(dir);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  io::WriteOptions wo;
  for (const auto& s : shards) {
    tensors.push_back({s.name, s.local});
    wo.metadata[s.name] = nlohmann::json{{"placements", toString(s.placements)},
                                         {"global_shape", s.globalShape},
                                         {"style", s.style}}
                              .dump();
  }
  io::writeSafetensors(dir + "/rank" + std::to_string(rank) + ".safetensors", tensors, wo);
}

void validateWrapper(const RunPlanOptions& o) {
  const auto names = parallel::paramStoreNames();
  if (std::find(names.begin(), names.end(), o.wrapper) == names.end()) {
    std::string known;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
    fail("--wrapper: unknown data-parallel wrapper '", o.wrapper, "' (known: ", known, ")");
  }
}

// The checks read host tensors: a snapshot is a new host copy (clone on the
// CPU lane, as before; one device-to-host copy on CUDA) ...
std::vector<checks::ParamShard> cloned(std::vector<checks::ParamShard> shards) {
  for (auto& s : shards)
    if (s.local.defined()) s.local = s.local.is_cpu() ? s.local.clone() : s.local.to(at::kCPU);
  return shards;
}

// ... and a view the checks read at once is copied only off the CPU.
std::vector<checks::ParamShard> onHost(std::vector<checks::ParamShard> shards) {
  for (auto& s : shards)
    if (s.local.defined()) s.local = s.local.to(at::kCPU);
  return shards;
}

std::vector<checks::FlatPartition> onHost(std::vector<checks::FlatPartition> partitions) {
  for (auto& p : partitions)
    if (p.local.defined()) p.local = p.local.to(at::kCPU);
  return partitions;
}

// The single-device reference: the independent code path every rank
// compares to. Its step-1 gradients and final parameters are TensorSources,
// so a rank reads only the slices it compares.
struct Reference {
  std::vector<StepRecord> steps;
  std::unique_ptr<io::TensorSource> grads;   // step-1 gradients
  std::unique_ptr<io::TensorSource> params;  // final parameters
  std::vector<NonFiniteValue> nonFinite;
  RunTimings timings;  // reference_seconds, reference_from_cache
};

// A reference computed in memory, as the ranks' judge.
Reference inMemory(const TrainResult& r) {
  Reference ref;
  ref.steps = r.steps;
  std::map<std::string, at::Tensor> g, p;
  for (const auto& kv : r.gradsStep1) g[kv.key()] = kv.value();
  for (const auto& kv : r.finalParams) p[kv.key()] = kv.value();
  ref.grads = std::make_unique<io::MapTensorSource>(std::move(g), "reference step-1 gradients");
  ref.params = std::make_unique<io::MapTensorSource>(std::move(p), "reference final parameters");
  ref.nonFinite = findNonFinite(r);
  return ref;
}

ParamMap initialParams(const RunPlanOptions& o, const ModelConfig& cfg) {
  return o.checkpoint.empty() ? initParameters(cfg, o.seed)
                              : loadCheckpoint(o.checkpoint, cfg, CheckpointOptions{o.allowNonFiniteCheckpoint});
}

// Runs `moe-harness reference` (this binary) into `out` as a child process,
// so the reference's memory is never part of a rank's: the child holds the
// single-device state, writes it to disk and exits before the ranks load.
// Returns whether it succeeded (a non-finite reference is an error there: the
// caller then computes it in memory to report where it became non-finite).
bool referenceInChildProcess(const RunPlanOptions& o, const TrainOptions& t, const std::string& out) {
  std::vector<std::string> args = {"moe-harness", "reference", "--config", o.configPath, "--steps",
                                   std::to_string(t.steps), "--out", out, "--dtype", o.dtype, "--seed",
                                   std::to_string(t.seed), "--batch-size", std::to_string(t.batchSize),
                                   "--seq-len", std::to_string(t.seqLen), "--threads", "1"};
  auto real = [&](const char* flag, double v) {
    args.push_back(flag);
    args.push_back(dumpJson(nlohmann::json(v), -1));  // shortest text that reads back exactly
  };
  real("--lr", t.adamw.lr);
  real("--beta1", t.adamw.beta1);
  real("--beta2", t.adamw.beta2);
  real("--eps", t.adamw.eps);
  real("--weight-decay", t.adamw.weightDecay);
  real("--max-grad-norm", t.maxGradNorm);
  if (!o.checkpoint.empty()) {
    args.push_back("--checkpoint");
    args.push_back(o.checkpoint);
    if (o.allowNonFiniteCheckpoint) args.push_back("--allow-nonfinite-checkpoint");
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ) != 0) return false;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return false;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// With a cache, rank 0 computes and stores it once per key (in a child
// process) while the others wait for the entry, then every rank opens the
// entry's files and reads only its slices; without one, every rank computes
// it in memory (small models).
Reference computeReference(const RunPlanOptions& o, const ModelConfig& cfg, const TrainOptions& t,
                           comm::Communicator& world) {
  const auto tRef = std::chrono::steady_clock::now();
  const int rank = world.rank();
  Reference ref;
  if (o.referenceCache.empty()) {
    ref = inMemory(train(cfg, initialParams(o, cfg), t));
  } else {
    ReferenceCache cache(o.referenceCache);
    const ReferenceKey key{cfg.toJson(), o.dtype, t, o.checkpoint};
    const std::string k = ReferenceCache::key(key);
    bool fromCache = true;
    if (rank == 0) {
      // Concurrent jobs of the same reference wait here for the first.
      const auto lock = cache.lock(k);
      if (!cache.has(k)) {
        fromCache = false;
        const std::string out = moe::str(cache.entryDir(k), ".run-", getpid());
        std::filesystem::remove_all(out);
        // A child process only pays off when the reference's state is
        // large: it costs a libtorch start-up (about 0.3-1 s), which for the
        // tiny models is more than the whole reference, and the suite runs
        // dozens of them. Below 256 MiB of parameters the reference is
        // computed here (its memory is then a few MiB on rank 0).
        int64_t paramBytes = 0;
        for (const auto& s : parameterSpecs(cfg)) {
          int64_t n = 1;
          for (int64_t d : s.shape) n *= d;
          paramBytes += n * 4;
        }
        const bool inChild = paramBytes >= (int64_t{256} << 20);
        if (!inChild) {
          cache.store(k, key, train(cfg, initialParams(o, cfg), t));
        } else if (referenceInChildProcess(o, t, out)) {
          cache.storeReferenceRun(k, key, out);
        } else {
          std::filesystem::remove_all(out);
          cache.store(k, key, train(cfg, initialParams(o, cfg), t));
        }
      }
    } else {
      // Waiting on the file system, not in a collective: computing a
      // realistic-width reference takes longer than a collective's timeout.
      // Should rank 0 die, the launcher stops this rank.
      while (!cache.has(k)) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    world.barrier();
    ref.steps = cache.loadSteps(k);
    ref.grads = std::make_unique<io::SafetensorsReader>(cache.entryDir(k) + "/grads_step1.safetensors");
    ref.params = std::make_unique<io::SafetensorsReader>(cache.entryDir(k) + "/final.safetensors");
    // Only a reference whose recorded values are not finite can hold a
    // non-finite tensor (a non-finite gradient makes the grad norm non-finite;
    // finite gradients keep finite parameters finite); then, and only then,
    // the tensors are read whole to locate it.
    const bool finite = std::all_of(ref.steps.begin(), ref.steps.end(), [](const StepRecord& s) {
      return std::isfinite(s.loss) && std::isfinite(s.ce) && std::isfinite(s.aux) && std::isfinite(s.gradNorm);
    });
    if (!finite) {
      if (auto cached = cache.load(k)) ref.nonFinite = findNonFinite(*cached);
    }
    ref.timings.referenceFromCache = rank == 0 ? fromCache : true;
  }
  ref.timings.referenceSeconds = secondsSince(tRef);
  if (rank == 0)
    std::cerr << "run-plan: reference " << (ref.timings.referenceFromCache ? "from cache" : "computed") << " in "
              << ref.timings.referenceSeconds << " s" << std::endl;
  return ref;
}

// Runs every registered check that applies: those of the loaded state
// (afterLoad), or all the others; into `results` by check.
void runStage(const checks::CheckContext& ctx, bool afterLoad,
               std::map<const checks::Check*, checks::CheckResult>& results) {
  for (const checks::Check* c : checks::checksInOrder())
    if ((c->stage() == checks::CheckStage::kAfterLoad) == afterLoad && c->applies(ctx)) {
      const auto t0 = std::chrono::steady_clock::now();
      results[c] = c->run(ctx);
      // Where a slow judge's time goes (realistic widths): named on stderr.
      if (const double s = secondsSince(t0); s >= 1.0 && ctx.mesh && ctx.mesh->world()->rank() == 0)
        std::cerr << "run-plan: check " << c->name() << " took " << s << " s" << std::endl;
    }
}

void writeResult(const RunResult& result, const std::string& path) {
  // Non-finite numbers are written as "nan" / "inf" / "-inf" (never null:
  // common/json_number.h); RunResult::fromJson reads them back.
  const nlohmann::json j = result.toJson();
  std::cout << dumpJson(j, 2) << std::endl;
  if (path.empty()) return;
  // Written next to the target and renamed: a reader never sees half a file.
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << dumpJson(j, 1) << "\n";
  std::filesystem::rename(tmp, path);
}

// cuBLAS keeps a workspace per (handle, stream), taken from the caching
// allocator at a thread's first GEMM, and autograd runs the backward on its
// own device thread with its own handle. Made here, before the memory
// baseline, they are not counted as the wrapper's memory (they are the
// library's, and live for the process).
void warmUpCudaLibraries(at::Device device) {
  for (const auto dt : {at::kFloat, at::kBFloat16}) {
    auto a = at::ones({16, 16}, at::TensorOptions(dt).device(device)).requires_grad_(true);
    at::mm(a, a).sum().backward();
  }
}

// The uninterrupted single-device run, seen from a run resumed after step
// k: steps k+1..n, the gradients of step k+1 (the resumed run's first step),
// the final parameters, and the state at step k (parameters and AdamW
// moments under the checkpoint's names).
struct ResumeReference {
  TrainResult result;  // steps k+1..n; gradsStep1 = step k+1's gradients
  std::map<std::string, at::Tensor> stateAtK;
  // Global step 1's gradients and grad norm: the AdamW allowance's basis.
  std::map<std::string, at::Tensor> globalStep1Grads;
  double globalStep1GradNorm = 0;
};
ResumeReference computeResumeReference(const ModelConfig& cfg, const ParamMap& initial, const TrainOptions& t,
                                       int64_t k) {
  ResumeReference r;
  Trainer trainer(cfg, initial, t);
  for (int64_t s = 1; s <= t.steps; ++s) {
    auto rec = trainer.step();
    if (s > k) r.result.steps.push_back(rec);
    if (s == k + 1) r.result.gradsStep1 = cloneParams(trainer.lastGrads());
    if (s == 1) {
      for (const auto& kv : trainer.lastGrads()) r.globalStep1Grads[kv.key()] = kv.value().detach().clone();
      r.globalStep1GradNorm = rec.gradNorm;
    }
    if (s == k) {
      size_t i = 0;
      const auto& opt = trainer.optimizer();
      for (const auto& kv : trainer.params()) {
        r.stateAtK[kv.key()] = kv.value().detach().clone();
        if (isCorrectionBias(kv.key())) {
          // deepseek_v3's correction biases are not AdamW parameters of the
          // reference (trainer.h): their moments stay 0, as the distributed
          // optimizer's for a parameter whose gradient is always 0.
          r.stateAtK[parallel::kExpAvgPrefix + kv.key()] = torch::zeros_like(kv.value());
          r.stateAtK[parallel::kExpAvgSqPrefix + kv.key()] = torch::zeros_like(kv.value());
          continue;
        }
        r.stateAtK[parallel::kExpAvgPrefix + kv.key()] = opt.expAvg().at(i).detach().clone();
        r.stateAtK[parallel::kExpAvgSqPrefix + kv.key()] = opt.expAvgSq().at(i).detach().clone();
        ++i;
      }
    }
  }
  r.result.initialParams = cloneParams(initial, torch::kFloat);
  r.result.finalParams = cloneParams(trainer.params());
  return r;
}

// Every tensor a save of `plan` must hold (parameters and both AdamW
// moments, saved names) and which of them are experts.
void savedTensorNames(const plan::AppliedPlan& plan, std::vector<std::string>& tensors,
                      std::vector<std::string>& experts) {
  for (const auto* prefix : {"", parallel::kExpAvgPrefix, parallel::kExpAvgSqPrefix})
    for (const auto& pp : plan.params) {
      tensors.push_back(prefix + pp.name);
      if (pp.isExpert) experts.push_back(prefix + pp.name);
    }
}

// Saves the run after step `step` (collective) and records the save's size
// and time for the checkpoint_complete report.
void saveCheckpoint(const RunPlanOptions& o, const ModelConfig& cfg, const TrainOptions& t, mesh::DeviceMesh& mesh,
                    const parallel::DistTrainer& trainer, int64_t step, checks::CheckContext& ctx) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto params = onHost(trainer.paramShards());
  const auto m = onHost(trainer.optimizerShards(false));
  const auto v = onHost(trainer.optimizerShards(true));
  const bool hf = o.saveFormat == "hf";
  parallel::DistSaveOptions so;
  // The consolidated layout is converted from a sharded staging copy: every
  // rank writes only what it owns either way.
  so.dir = hf ? o.saveDir + ".sharded" : o.saveDir;
  so.step = step;
  so.info = {{"step", step},
             {"data_position", step + 1},
             {"adamw", {{"step", step}, {"lr", t.adamw.lr}, {"beta1", t.adamw.beta1}, {"beta2", t.adamw.beta2},
                        {"eps", t.adamw.eps}, {"weight_decay", t.adamw.weightDecay}}},
             {"max_grad_norm", t.maxGradNorm},
             {"config", cfg.toJson()},
             {"seed", t.seed},
             {"batch_size", t.batchSize},
             {"seq_len", t.seqLen},
             {"mesh", o.mesh},
             {"plan", o.planPath},
             {"wrapper", o.wrapper},
             {"fsdp_experts", o.fsdpExperts},
             {"world_size", mesh.world()->size()},
             {"dtype", o.dtype}};
  parallel::saveDistCheckpoint(so, mesh, params, m, v);
  const double seconds = secondsSince(t0);
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(so.dir + "/" + io::rankFileName(mesh.world()->rank()), ec);
  ctx.saveStats = {{"step", step}, {"format", o.saveFormat}, {"rank_file_bytes", ec ? 0 : bytes},
                   {"seconds", seconds},
                   {"mb_per_s", seconds > 0 && !ec ? static_cast<double>(bytes) / 1e6 / seconds : 0.0}};
  if (hf) {
    // Rank 0 audits the staging copy (the sharded layout's own check), then
    // writes the consolidated one from it. An audit problem is left for
    // checkpoint_complete to report (with the staging copy kept to inspect);
    // a failure to write is every rank's error.
    const auto t1 = std::chrono::steady_clock::now();
    std::string error;
    if (mesh.world()->rank() == 0) {
      try {
        std::vector<std::string> tensors, experts;
        savedTensorNames(trainer.plan(), tensors, experts);
        nlohmann::json audit;
        ctx.saveProblem = checks::checkpointProblem(so.dir, tensors, experts, audit);
        if (ctx.saveProblem.empty()) {
          std::vector<std::string> names;
          for (const auto& p : trainer.plan().params) names.push_back(p.name);
          parallel::HfWriteOptions ho;
          ho.dir = o.saveDir;
          ho.info = so.info;
          // The audit above verified every piece's hash: read without
          // hashing each piece a second time.
          parallel::writeHfCheckpoint(io::DistCheckpointSource(so.dir, io::DistReadOptions{/*verifyHashes=*/false}),
                                      cfg, names, ho);
          std::filesystem::remove_all(so.dir);
        }
      } catch (const HarnessError& e) {
        error = e.what();
      }
    }
    const auto v = checks::agreeVerdict(*mesh.world(), error);
    if (v.failed) fail("--save ", o.saveDir, " (--save-format hf): ", v.explanation);
    ctx.saveStats["consolidate_seconds"] = secondsSince(t1);
  }
  if (mesh.world()->rank() == 0)
    std::cerr << "run-plan: saved step " << step << " to " << o.saveDir << " in " << seconds << " s" << std::endl;
}

// Refuses a resume whose checkpoint was saved for another model or data:
// every difference named with both values, before any collective.
void validateResume(const RunPlanOptions& o, const nlohmann::json& info, const ModelConfig& cfg,
                    const TrainOptions& t) {
  const std::string where = "--resume " + o.resumeDir;
  if (!info.contains("config")) fail(where, ": the checkpoint's info has no config");
  const std::string mismatch = parallel::configMismatch(info["config"], cfg.toJson());
  if (!mismatch.empty()) fail(where, ": ", mismatch);
  auto same = [&](const char* key, const nlohmann::json& run) {
    if (!info.contains(key)) fail(where, ": the checkpoint's info has no ", key);
    if (info[key] != run)
      fail(where, ": ", key, " is ", info[key].dump(), " in the checkpoint, ", run.dump(), " in this run");
  };
  same("seed", t.seed);
  same("batch_size", t.batchSize);
  same("seq_len", t.seqLen);
  const int64_t k = info.value("step", int64_t{-1});
  if (k < 0 || k >= o.steps)
    fail(where, ": the checkpoint is of step ", k, ", --steps is ", o.steps, " (nothing left to train)");
}

}  // namespace

int runPlan(const RunPlanOptions& o) {
  RunMemoryProbe memProbe;  // counts tensor storage from here on (run_plan_memory.h)
  at::set_num_threads(1);  // ranks share the machine's cores
  const auto t0 = std::chrono::steady_clock::now();
  RunTimings phases;  // where the time goes (run_result.h); copied into the result
  phases.spawnSeconds = launch::secondsSinceSpawn();
  comm::CommOptions co;
  co.backend = o.backend;
  // Validated first: an unknown device or nccl with cpu fails here, on every
  // rank, with the option's name.
  try {
    co.deviceType = comm::resolveDeviceType(o.backend, o.device);
  } catch (const HarnessError& e) {
    fail("--device/--backend: ", e.what());
  }
  auto env = launch::rankEnvFromEnvironment();
  co.timeout = std::chrono::milliseconds(static_cast<int64_t>(o.commTimeout * 1000));
  validateWrapper(o);
  const auto tRendezvous = std::chrono::steady_clock::now();
  auto world = launch::initWorld(env, co);
  phases.rendezvousSeconds = secondsSince(tRendezvous);
  const auto tLoad = std::chrono::steady_clock::now();
  const at::Device device = world->device();  // the device lane of every distributed tensor
  // Every implemented family runs distributed (dist_model.h asks the
  // family's traits); an unimplemented model_type is refused here, on every
  // rank, before any collective.
  const ModelConfig cfg = ModelConfig::fromFile(o.configPath);
  mesh::DeviceMesh mesh(world, mesh::DeviceMesh::parse(o.mesh));
  const plan::AppliedPlan applied = plan::applyPlan(plan::Plan::fromFile(o.planPath), cfg, mesh.shape());

  TrainOptions t;
  t.steps = o.steps;
  t.seed = o.seed;
  t.batchSize = o.batchSize;
  t.seqLen = o.seqLen;
  if (o.dtype != "fp32" && o.dtype != "bf16") fail("--dtype must be fp32 or bf16, got '", o.dtype, "'");
  t.precision = o.dtype == "bf16" ? Precision::kBf16 : Precision::kFp32;
  const parallel::LoadPath loadPath = parallel::parseLoadPath(o.load);  // before the costly reference run
  if (!o.saveDir.empty() && (o.saveAt < 1 || o.saveAt > o.steps))
    fail("--save-at must be in [1, --steps = ", o.steps, "], got ", o.saveAt);
  std::unique_ptr<io::TensorSource> resumeSource;
  nlohmann::json resumeInfo;
  int64_t resumeStep = 0;
  if (!o.resumeDir.empty()) {
    if (!o.checkpoint.empty()) fail("--resume and --checkpoint exclude each other");
    auto opened = parallel::openResumeCheckpoint(o.resumeDir, fusedViewOptions(cfg));
    resumeSource = std::move(opened.source);
    resumeInfo = std::move(opened.info);
    validateResume(o, resumeInfo, cfg, t);
    resumeStep = resumeInfo["step"].get<int64_t>();
  }

  // The checkpoint: a file or a sharded directory (io::openCheckpoint), in
  // either expert layout, or the seed's init. Opened once: the files' headers
  // are read here, and the loading path below reads only this rank's slices.
  std::unique_ptr<io::TensorSource> file;
  std::unique_ptr<io::TensorSource> source;
  if (!o.checkpoint.empty()) {
    file = io::openCheckpoint(o.checkpoint);
    source = std::make_unique<io::FusedExpertView>(*file, fusedViewOptions(cfg));
    // Every tensor is read here, before any training: a NaN or Inf is a user
    // error naming the file, the tensor and the first index. One tensor at a
    // time: nothing of it is kept.
    validateCheckpoint(*file, cfg, CheckpointOptions{o.allowNonFiniteCheckpoint});
  } else {
    // Slices are materialised on read: a rank never builds the full model.
    source = std::make_unique<InitTensorSource>(cfg, o.seed);
  }
  phases.loadSeconds = secondsSince(tLoad);  // config, plan, checkpoint scan; the rest after the reference
  std::optional<ResumeReference> resumeRef, roundtripRef;
  if (resumeSource) resumeRef = computeResumeReference(cfg, initialParams(o, cfg), t, resumeStep);
  // --resume-roundtrip: the reference's state at the save step, computed
  // before the memory baseline (it is the judge's, not the wrapper's).
  if (o.resumeRoundtrip && !o.saveDir.empty())
    roundtripRef = computeResumeReference(cfg, initialParams(o, cfg), t, o.saveAt);
  const Reference reference = resumeRef ? inMemory(resumeRef->result) : computeReference(o, cfg, t, *world);
  const auto tLoad2 = std::chrono::steady_clock::now();

  parallel::LoadOptions lo;
  lo.path = loadPath;
  lo.source = source.get();
  lo.mesh = &mesh;
  lo.plan = &applied;
  parallel::DistOptions dopt;
  dopt.wrapper = o.wrapper;
  dopt.expertSharding = o.fsdpExperts;
  if (device.is_cuda()) warmUpCudaLibraries(device);
  memProbe.beforeLoad(device);
  // The loaded plan-local tensors are a temporary: every store copies what it
  // keeps, and a copy kept here would be measured as the wrapper's memory.
  std::optional<parallel::ResumeState> resumed;
  if (resumeSource) resumed = parallel::loadResumeState(*resumeSource, resumeInfo, applied, mesh);
  // A pointer: --resume-roundtrip replaces the trainer mid-run.
  auto trainerPtr = std::make_unique<parallel::DistTrainer>(
      cfg, mesh, applied, resumed ? resumed->params : parallel::loadParams(lo), t, dopt);
  if (resumed) {
    trainerPtr->restoreState(resumed->step, resumed->expAvg, resumed->expAvgSq);
    resumed.reset();  // the store and the optimizer copied what they keep
  }
  phases.loadSeconds += secondsSince(tLoad2);

  // One context for every check; each reads what it needs (check_context.h).
  checks::CheckContext ctx;
  ctx.mesh = &mesh;
  ctx.plan = &applied;
  ctx.config = &cfg;
  ctx.dtype = o.dtype;
  ctx.steps = o.steps - resumeStep;  // steps this run trains
  ctx.wrapper = trainerPtr->store().name();
  ctx.parameterGatherPrefix = trainerPtr->store().parameterGatherPrefix();
  ctx.computeElementBytes = static_cast<int64_t>(c10::elementSize(computeDtype(t.precision)));
  ctx.expectedPlacements = &o.expectedPlacements;
  if (!o.tolerance.empty()) ctx.parity.tolerance = parseTolerance(o.tolerance);
  ctx.parity.dtype = o.dtype;
  ctx.parity.optimizer = {t.adamw.lr, t.adamw.eps, t.maxGradNorm};
  ctx.memoryOptions.expectedFactor = o.expectMemoryFactor;
  ctx.measuredMemoryOptions.assertAccounted = !o.allowUnaccountedMemory;

  // ---- after loading
  // Snapshots of this size or more live in a file (spillToDisk): 64 MiB,
  // far above every shipped tiny config, far below a realistic width's.
  constexpr int64_t kSpillBytes = int64_t{64} << 20;
  const std::string spillDir = std::filesystem::temp_directory_path().string();
  auto loaded = cloned(trainerPtr->paramShards());
  spillToDisk(loaded, spillDir, kSpillBytes);
  std::vector<checks::FlatPartition> flat = onHost(trainerPtr->store().flatPartitions());
  ctx.params = &loaded;
  ctx.checkpoint = resumeSource ? static_cast<const io::TensorSource*>(resumeSource.get()) : source.get();
  // A resumed run's loaded state, parameters and moments, under the saved
  // names (resume_parity).
  std::vector<checks::ParamShard> resumedState;
  std::unique_ptr<io::MapTensorSource> referenceAtResume;
  if (resumeRef) {
    resumedState = loaded;
    for (const bool second : {false, true})
      for (auto s : cloned(trainerPtr->optimizerShards(second))) {
        s.name = (second ? parallel::kExpAvgSqPrefix : parallel::kExpAvgPrefix) + s.name;
        resumedState.push_back(std::move(s));
      }
    referenceAtResume = std::make_unique<io::MapTensorSource>(resumeRef->stateAtK, moe::str(
        "the uninterrupted reference at step ", resumeStep));
    ctx.resumedFromStep = resumeStep;
    ctx.resumedState = &resumedState;
    ctx.referenceStateAtResume = referenceAtResume.get();
  }
  ctx.flatPartitions = &flat;
  std::map<const checks::Check*, checks::CheckResult> results;
  const auto tChecks1 = std::chrono::steady_clock::now();
  runStage(ctx, /*afterLoad=*/true, results);
  phases.checksSeconds = secondsSince(tChecks1);
  // Later only the partitions' layout is read (memory): a copy of their
  // values kept through training would be measured as the wrapper's memory.
  for (auto& p : flat) p.local = at::Tensor();
  if (!o.dumpShards.empty()) dumpShards(o.dumpShards, env.rank, loaded);

  // ---- training, keeping what the checks of step 1 read
  RunResult result;
  result.timings = phases;
  result.timings.referenceSeconds = reference.timings.referenceSeconds;
  result.timings.referenceFromCache = reference.timings.referenceFromCache;
  std::vector<StepRecord> steps;
  std::vector<checks::ParamShard> grads1, afterStep1;
  checks::CommCounters step1Comm;
  std::vector<checks::CommExpectation> wrapperStep1, step1Expected;
  checks::DispatchInputs dispatch;
  dispatch.globalTokens = t.batchSize * t.seqLen;
  // The first step whose loss, ce, aux or grad norm is not finite: this
  // rank's shards are scanned then to name the first tensor and index. The
  // record's values are global (the same on every rank), so every rank
  // scans at the same step (gradShards() is collective under zero3).
  std::vector<NonFiniteValue> runNonFinite;
  const std::vector<int> meshSizes = ref::meshSizes(mesh);
  const std::vector<int> meshCoords = mesh.coords();
  const int64_t firstStep = resumeStep + 1;
  const std::string saveDir = o.saveDir;
  if (o.resumeRoundtrip && o.saveDir.empty()) fail("--resume-roundtrip needs --save and --save-at");
  std::vector<checks::ParamShard> roundtripState;
  std::unique_ptr<io::MapTensorSource> roundtripRefState;
  for (int64_t s = firstStep; s <= o.steps; ++s) {
    const auto tStep = std::chrono::steady_clock::now();
    checks::CommWindow window;
    memProbe.beginStep(snapshotBytes({&loaded, &grads1, &afterStep1, &resumedState, &roundtripState}, device));
    steps.push_back(trainerPtr->step());
    memProbe.endStep(snapshotBytes({&loaded, &grads1, &afterStep1, &resumedState, &roundtripState}, device));
    if (s == firstStep) {
      step1Comm = window.delta();  // before the checks' own gathers (zero3's gradShards)
      grads1 = cloned(trainerPtr->gradShards());
      spillToDisk(grads1, spillDir, kSpillBytes);
      step1Expected = trainerPtr->expectedStepComm();  // uses step 1's routing
      dispatch.sentRows = trainerPtr->lastDispatch().tokensSent;
      wrapperStep1 = trainerPtr->store().expectedStepComm();
      afterStep1 = cloned(trainerPtr->paramShards());
      spillToDisk(afterStep1, spillDir, kSpillBytes);
    }
    if (runNonFinite.empty() && !checks::finiteRecord(steps.back())) {
      const auto g = trainerPtr->gradShards();
      const auto p = trainerPtr->paramShards();
      runNonFinite = checks::scanStep(steps.back(), &g, &p, meshSizes, meshCoords);
      if (env.rank == 0)
        std::cerr << "run-plan: non-finite values at step " << s << " (the finite check fails the run)" << std::endl;
    }
    result.timings.stepSeconds.push_back(secondsSince(tStep));
    if (env.rank == 0)
      std::cerr << "run-plan: step " << s << "/" << o.steps << " loss " << steps.back().loss << " (reference "
                << reference.steps[s - firstStep].loss << ")" << std::endl;
    if (!o.saveDir.empty() && s == o.saveAt) {
      saveCheckpoint(o, cfg, t, mesh, *trainerPtr, s, ctx);
      if (o.resumeRoundtrip) {
        // The same job resumes from what it just saved: a fresh trainer
        // loads the checkpoint with the plan's slices and continues.
        trainerPtr.reset();
        const auto src = parallel::openResumeCheckpoint(saveDir, fusedViewOptions(cfg));
        auto st = parallel::loadResumeState(*src.source, src.info, applied, mesh);
        trainerPtr = std::make_unique<parallel::DistTrainer>(cfg, mesh, applied, st.params, t, dopt);
        trainerPtr->restoreState(st.step, st.expAvg, st.expAvgSq);
        roundtripState = cloned(trainerPtr->paramShards());
        for (const bool second : {false, true})
          for (auto sh : cloned(trainerPtr->optimizerShards(second))) {
            sh.name = (second ? parallel::kExpAvgSqPrefix : parallel::kExpAvgPrefix) + sh.name;
            roundtripState.push_back(std::move(sh));
          }
        roundtripRefState = std::make_unique<io::MapTensorSource>(
            roundtripRef->stateAtK, moe::str("the uninterrupted reference at step ", s));
        ctx.resumedFromStep = s;
        ctx.resumedState = &roundtripState;
        ctx.referenceStateAtResume = roundtripRefState.get();
      }
    }
  }
  const auto finalShards = onHost(trainerPtr->paramShards());

  // ---- after the last step
  const auto tChecks2 = std::chrono::steady_clock::now();
  std::optional<io::MapTensorSource> refGlobalStep1Grads;
  if (resumeRef) {
    refGlobalStep1Grads.emplace(resumeRef->globalStep1Grads, "reference step-1 gradients");
    ctx.referenceGlobalStep1Grads = &*refGlobalStep1Grads;
    ctx.referenceGlobalStep1GradNorm = resumeRef->globalStep1GradNorm;
  }
  ctx.runSteps = &steps;
  ctx.runNonFinite = &runNonFinite;
  ctx.referenceNonFinite = &reference.nonFinite;
  ctx.referenceSteps = &reference.steps;
  ctx.step1Grads = &grads1;
  ctx.referenceGrads = reference.grads.get();
  ctx.finalParams = &finalShards;
  ctx.referenceParams = reference.params.get();
  ctx.step1Params = &afterStep1;
  ctx.commDelta = &step1Comm;
  ctx.commExpected = &step1Expected;
  ctx.dispatch = &dispatch;
  ctx.wrapperCommExpected = &wrapperStep1;
  const checks::MemoryInputs memory = memoryInputs(trainerPtr->store().memory(), trainerPtr->optimizerStateBytes(), applied,
                                                   mesh, finalShards, flat);
  const auto measuredMemory = checks::gatherMeasuredMemory(
      *world, memProbe.measured(memory.paramBytes + memory.gradBytes + memory.optimizerBytes, memory.replicatedBytes,
                                memoryAllowance(loaded, applied, mesh)));
  if (!o.saveDir.empty()) {
    ctx.savedCheckpoint = o.saveDir;
    savedTensorNames(applied, ctx.savedTensors, ctx.savedExpertTensors);
  }
  ctx.memory = &memory;
  ctx.measuredMemory = &measuredMemory;
  runStage(ctx, /*afterLoad=*/false, results);
  result.timings.checksSeconds += secondsSince(tChecks2);

  result.passed = true;
  for (const checks::Check* c : checks::checksInOrder())
    if (results.count(c)) {
      result.checks.push_back(results.at(c));
      result.passed &= result.checks.back().passed;
    }
  if (env.rank == 0) {
    result.config = o.configPath;
    result.mesh = mesh.shape().describe();
    result.plan = o.planPath;
    result.dtype = o.dtype;
    result.load = o.load;
    result.mutant = o.mutant;
    result.seed = o.seed;
    result.worldSize = env.worldSize;
    result.wrapper = o.wrapper;
    result.fsdpExperts = o.fsdpExperts;
    result.device = co.deviceType;
    result.memory = memoryJson(memory);
    result.measuredMemory = checks::measuredMemoryJson(measuredMemory);
    for (size_t i = 0; i < steps.size(); ++i) result.steps.push_back({steps[i], reference.steps[i]});
    result.step1Collectives = countersJson(step1Comm);
    const char* git = std::getenv("MOE_HARNESS_GIT_REVISION");
    result.environment = environmentJson(o.backend, git ? git : "unknown");
    result.timings.totalSeconds = secondsSince(t0);
    writeResult(result, o.resultJson);
    if (o.removeSaveAfter && !o.saveDir.empty()) {
      std::filesystem::remove_all(o.saveDir);
      std::filesystem::remove_all(o.saveDir + ".sharded");  // an hf save's staging copy left by a failed audit
    }
  }
  return result.passed ? 0 : 1;
}

}  // namespace moe::conformance
