#include "reference/train/reference_run.h"

#include <cmath>
#include <filesystem>
#include <functional>
#include <fstream>
#include <iomanip>
#include <memory>
#include <set>
#include <sstream>

#include <unistd.h>

#include "common/error.h"
#include "common/json_number.h"
#include "reference/io/expert_layout.h"
#include "reference/io/nonfinite.h"
#include "reference/io/safetensors.h"
#include "reference/io/sharded_safetensors.h"
#include "reference/model/init.h"
#include "reference/train/hub_naming.h"

namespace moe::ref {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string hex64(uint64_t v) {
  std::ostringstream os;
  os << std::hex << std::setw(16) << std::setfill('0') << v;
  return os.str();
}

json checksumsJson(const std::vector<TensorChecksum>& sums) {
  json out = json::object();
  for (const auto& c : sums)
    out[c.name] = {{"sum", c.sum}, {"abs_sum", c.absSum}, {"fnv1a64", hex64(c.bitHash)}};
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> asList(const ParamMap& params) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : params) out.emplace_back(item.key(), item.value().detach().contiguous());
  return out;
}

void writeJson(const fs::path& path, const json& j) {
  std::ofstream out(path);
  if (!out) fail("reference: cannot write ", path.string());
  out << dumpJson(j, 2) << "\n";
  if (!out) fail("reference: error writing ", path.string());
}

}  // namespace

ParamMap loadCheckpoint(const std::string& path, const ModelConfig& config, const CheckpointOptions& options) {
  return loadCheckpoint(*io::openCheckpoint(path), config, options);
}

namespace {

// Reads, checks and hands over every parameter of `config`, one at a time.
void forEachCheckpointTensor(const io::TensorSource& source, const ModelConfig& config,
                             const CheckpointOptions& options,
                             const std::function<void(const std::string&, at::Tensor)>& take) {
  const std::string file = source.where();
  io::FusedExpertView view(source, fusedViewOptions(config));
  std::set<std::string> expected;
  for (const auto& spec : parameterSpecs(config)) {
    expected.insert(spec.name);
    if (!view.has(spec.name)) fail("checkpoint ", file, ": missing tensor ", spec.name);
    auto shape = view.shape(spec.name);
    if (shape != spec.shape)
      fail("checkpoint ", file, ": tensor ", spec.name, " has shape ",
           torch::IntArrayRef(shape), ", config expects ", torch::IntArrayRef(spec.shape));
    at::Tensor t = view.read(spec.name);
    if (!options.allowNonFinite) io::requireFiniteTensor(view.whereOf(spec.name), spec.name, t);
    take(spec.name, std::move(t));
  }
  for (const auto& name : view.names())
    if (!expected.count(name) && !(config.tieWordEmbeddings && name == "lm_head.weight"))
      fail("checkpoint ", file, ": unexpected tensor ", name,
           " (not a parameter of this config)");
}

}  // namespace

ParamMap loadCheckpoint(const io::TensorSource& source, const ModelConfig& config, const CheckpointOptions& options) {
  ParamMap params;
  forEachCheckpointTensor(source, config, options,
                          [&](const std::string& name, at::Tensor t) { params.insert(name, t.to(torch::kFloat)); });
  return params;
}

void validateCheckpoint(const io::TensorSource& source, const ModelConfig& config, const CheckpointOptions& options) {
  forEachCheckpointTensor(source, config, options, [](const std::string&, at::Tensor) {});
}

std::vector<NonFiniteValue> findNonFinite(const TrainResult& result) {
  return findNonFinite(result.steps, &result.gradsStep1, &result.finalParams);
}

std::vector<NonFiniteValue> findNonFinite(const std::vector<StepRecord>& steps, const ParamMap* gradsStep1,
                                          const ParamMap* finalParams) {
  std::vector<NonFiniteValue> out;
  for (size_t i = 0; i < steps.size() && out.empty(); ++i) {
    const StepRecord& st = steps[i];
    const bool first = i == 0, last = i + 1 == steps.size();
    auto scalar = [&](const char* quantity, double x) {
      if (!std::isfinite(x)) out.push_back({st.step, quantity, "", "is " + nonFiniteName(x)});
    };
    // The tensor whose checksum is not finite, located in `kept` if given.
    auto tensor = [&](const char* quantity, const std::vector<TensorChecksum>& sums, const ParamMap* kept) {
      for (const auto& c : sums) {
        if (std::isfinite(c.sum) && std::isfinite(c.absSum)) continue;
        std::string detail = "its sum is " + nonFiniteName(std::isfinite(c.sum) ? c.absSum : c.sum);
        if (kept && kept->contains(c.name)) detail = io::describeNonFinite(io::scanNonFinite((*kept)[c.name]));
        out.push_back({st.step, quantity, c.name, detail});
        return;
      }
      // No checksums (a cached reference): scan the tensors kept.
      if (sums.empty() && kept)
        for (const auto& kv : *kept) {
          const io::NonFiniteScan s = io::scanNonFinite(kv.value());
          if (!s.found()) continue;
          out.push_back({st.step, quantity, kv.key(), io::describeNonFinite(s)});
          return;
        }
    };
    scalar("loss", st.loss);
    scalar("ce", st.ce);
    scalar("aux", st.aux);
    tensor("gradient", st.gradChecksums, first ? gradsStep1 : nullptr);
    scalar("grad_norm", st.gradNorm);
    tensor("parameter", st.paramChecksums, last ? finalParams : nullptr);
  }
  return out;
}

std::string describeNonFinite(const std::vector<NonFiniteValue>& values) {
  std::string s;
  for (const auto& v : values) s += (s.empty() ? "" : "; ") + v.describe();
  return s;
}

void runReference(const ReferenceRunOptions& o) {
  auto config = ModelConfig::fromFile(o.configPath);
  if (!o.expertsImpl.empty()) {
    config.expertsImplementation = o.expertsImpl;
    config.validate();
  }
  TrainOptions train = o.train;
  train.precision = parsePrecision(o.dtype);
  if (train.steps < 1) fail("reference: --steps must be >= 1, got ", train.steps);
  if (o.threads < 1) fail("reference: --threads must be >= 1, got ", o.threads);
  at::set_num_threads(o.threads);

  // Memory: the run holds its state (parameters, gradients, AdamW moments)
  // and nothing else of parameter size. The initial weights are written
  // before training and handed to the trainer (not copied), step 1's
  // gradients are written from the trainer's own tensors before clipping,
  // the final parameters from the trainer's masters. Files go to a private
  // sibling directory first and are moved into --out only when the run
  // stayed finite: a non-finite run writes nothing.
  const fs::path out = o.outDir;
  const fs::path staging = out.string() + ".partial-" + std::to_string(::getpid());
  fs::remove_all(staging);
  fs::create_directories(staging);
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ec;
      if (!dir.empty()) fs::remove_all(dir, ec);
    }
  } cleanup{staging};
  io::WriteOptions meta;
  meta.metadata = {{"format", "pt"}};

  ParamMap initial = o.checkpoint.empty() ? initParameters(config, train.seed)
                                          : loadCheckpoint(o.checkpoint, config,
                                                           CheckpointOptions{o.allowNonFiniteCheckpoint});
  io::writeSafetensors((staging / "model.safetensors").string(), asList(initial), meta);
  Trainer trainer(config, std::move(initial), train);
  trainer.keepLastGrads(false);
  ParamMap nonFiniteGrads;  // only a first step's non-finite gradients, to locate them
  trainer.setGradientObserver([&](const StepRecord& rec, const ParamMap& grads) {
    if (rec.step != train.firstStep) return;
    for (const auto& c : rec.gradChecksums)
      if (!std::isfinite(c.sum) || !std::isfinite(c.absSum)) nonFiniteGrads.insert(c.name, grads[c.name].clone());
    if (nonFiniteGrads.is_empty())
      io::writeSafetensors((staging / "grads_step1.safetensors").string(), asList(grads), meta);
  });
  std::vector<StepRecord> records;
  for (int64_t s = 1; s <= train.steps; ++s) records.push_back(trainer.step());
  if (const auto bad = findNonFinite(records, &nonFiniteGrads, &trainer.params()); !bad.empty())
    fail("reference: training produced non-finite values (no reference written): ", describeNonFinite(bad),
         " (the loss, every gradient and every parameter must stay finite; lower --lr, check the checkpoint)");

  io::writeSafetensors((staging / "model_final.safetensors").string(), asList(trainer.params()), meta);
  std::vector<std::pair<std::string, at::Tensor>> batches;
  for (int64_t s = train.firstStep; s < train.firstStep + train.steps; ++s)  // global step numbers
    batches.emplace_back(str("step_", s), trainBatch(config, train, s));
  io::writeSafetensors((staging / "batches.safetensors").string(), batches, meta);
  writeJson(staging / "config.json", config.toJson());

  json steps = json::array();
  for (const auto& st : records)
    steps.push_back({{"step", st.step},
                     {"loss", st.loss},
                     {"ce", st.ce},
                     {"aux", st.aux},
                     {"grad_norm", st.gradNorm},
                     {"param_checksums", checksumsJson(st.paramChecksums)},
                     {"grad_checksums", checksumsJson(st.gradChecksums)}});
  const auto& a = train.adamw;
  json hyper = {
      {"steps", train.steps},
      {"dtype", precisionName(train.precision)},
      {"seed", train.seed},
      {"batch_size", train.batchSize},
      {"seq_len", train.seqLen},
      {"init", o.checkpoint.empty() ? json("seeded") : json(o.checkpoint)},
      {"init_std", kInitStd},
      {"optimizer", {{"name", "AdamW"}, {"lr", a.lr}, {"betas", {a.beta1, a.beta2}},
                     {"eps", a.eps}, {"weight_decay", a.weightDecay}}},
      {"max_grad_norm", train.maxGradNorm},
      {"router_aux_loss_coef", config.routerAuxLossCoef},
      {"experts_implementation", config.expertsImplementation},
      {"threads", o.threads},
      {"grads_step1", "before clipping"},
  };
  writeJson(staging / "losses.json", {{"hyperparameters", hyper},
                                      {"environment", {{"libtorch", TORCH_VERSION}}},
                                      {"steps", steps}});
  fs::create_directories(out);
  for (const auto& f : fs::directory_iterator(staging)) fs::rename(f.path(), out / f.path().filename());
}

}  // namespace moe::ref
