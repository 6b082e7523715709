#include "reference/train/trainer.h"

#include "common/error.h"
#include "reference/model/deepseek_v3.h"
#include "reference/model/family.h"
#include "reference/model/init.h"
#include "reference/model/qwen3_moe.h"

namespace moe::ref {

Precision parsePrecision(const std::string& s) {
  if (s == "fp32") return Precision::kFp32;
  if (s == "bf16") return Precision::kBf16;
  fail("dtype must be fp32 or bf16, got \"", s, "\"");
}

std::string precisionName(Precision p) { return p == Precision::kFp32 ? "fp32" : "bf16"; }

torch::ScalarType computeDtype(Precision p) {
  return p == Precision::kFp32 ? torch::kFloat : torch::kBFloat16;
}

TensorChecksum checksum(const std::string& name, const torch::Tensor& t) {
  TensorChecksum c;
  c.name = name;
  auto x = t.detach().contiguous();
  // Block by block: a double copy of the whole tensor (and its abs) would
  // be 4x its fp32 bytes of transient memory. Within a block the sum is
  // libtorch's; blocks are added in order (tensors up to one block give
  // exactly the unblocked sums).
  constexpr int64_t kBlock = int64_t{1} << 16;
  const auto flat = x.view(-1);
  for (int64_t off = 0; off < flat.numel(); off += kBlock) {
    const auto d = flat.narrow(0, off, std::min(kBlock, flat.numel() - off)).to(torch::kDouble);
    c.sum += d.sum().item<double>();
    c.absSum += d.abs().sum().item<double>();
  }
  uint64_t h = 0xcbf29ce484222325ULL;
  const auto* bytes = static_cast<const unsigned char*>(x.data_ptr());
  const size_t n = x.numel() * x.element_size();
  for (size_t i = 0; i < n; ++i) {
    h ^= bytes[i];
    h *= 0x100000001b3ULL;
  }
  c.bitHash = h;
  return c;
}

Trainer::Trainer(ModelConfig config, const ParamMap& initialParams, TrainOptions options)
    : config_(std::move(config)),
      options_(options),
      params_(cloneParams(initialParams, torch::kFloat)),
      optimizer_(options.adamw) {
  init();
}

Trainer::Trainer(ModelConfig config, ParamMap&& initialParams, TrainOptions options)
    : config_(std::move(config)), options_(options), optimizer_(options.adamw) {
  for (auto& item : initialParams) {
    auto t = item.value().detach();
    params_.insert(item.key(), t.scalar_type() == torch::kFloat ? t : t.to(torch::kFloat));
  }
  initialParams = ParamMap();
  init();
}

void Trainer::init() {
  config_.validate();
  if (options_.firstStep < 1) fail("trainer: the first step must be >= 1, got ", options_.firstStep);
  step_ = options_.firstStep - 1;
  for (const auto& spec : parameterSpecs(config_)) {
    const auto& p = getParam(params_, spec.name);
    if (p.sizes().vec() != spec.shape)
      fail("trainer: parameter ", spec.name, " has shape ", p.sizes(), ", config expects ",
           torch::IntArrayRef(spec.shape));
  }
  // deepseek_v3's correction biases are state, not trained (isCorrectionBias).
  for (auto& item : params_) item.value().requires_grad_(!isCorrectionBias(item.key()));
}

torch::Tensor trainBatch(const ModelConfig& config, const TrainOptions& options, int64_t step) {
  return syntheticBatch({options.batchSize, options.seqLen, config.vocabSize, options.seed}, step);
}

torch::Tensor Trainer::batch(int64_t step) const { return trainBatch(config_, options_, step); }

StepRecord Trainer::step() {
  ++step_;
  StepRecord rec;
  rec.step = step_;
  auto ids = batch(step_);
  for (auto& item : params_) item.value().mutable_grad() = torch::Tensor();
  auto out = forwardModel(config_, params_, ids, {computeDtype(options_.precision)});
  auto parts = computeLoss(config_, out, ids);
  parts.loss.backward();
  rec.loss = parts.loss.item<double>();
  rec.ce = parts.ce.item<double>();
  rec.aux = parts.aux.item<double>();

  std::vector<torch::Tensor> params, grads;
  ParamMap live;  // every gradient before clipping, not copied
  lastGrads_ = ParamMap();
  for (auto& item : params_) {
    if (isCorrectionBias(item.key())) {
      // No gradient reaches it (selection only) and the optimizer never
      // steps it: recorded as a zero gradient, so every parameter has one.
      auto zero = torch::zeros_like(item.value()).detach();
      live.insert(item.key(), zero);
      rec.gradChecksums.push_back(checksum(item.key(), zero));
      continue;
    }
    auto g = item.value().grad();
    // Every parameter takes part in the forward (experts are fused per layer),
    // so torch's "skip params whose grad is None" never applies.
    MOE_ASSERT(g.defined(), "parameter ", item.key(), " got no gradient");
    MOE_ASSERT(g.scalar_type() == torch::kFloat, "master gradient of ", item.key(), " is ",
               g.scalar_type());
    live.insert(item.key(), g.detach());
    rec.gradChecksums.push_back(checksum(item.key(), g));
    params.push_back(item.value());
    grads.push_back(g);
  }
  if (observer_) observer_(rec, live);
  // Clipping scales the gradients in place: what lastGrads() keeps is a copy.
  if (keepLastGrads_) lastGrads_ = cloneParams(live);
  live = ParamMap();
  rec.gradNorm = clipGradNorm(grads, options_.maxGradNorm);
  optimizer_.step(params, grads);
  // The harness's balancing rule (deepseek_v3.h), after the optimizer step:
  // the loads of this step's (whole, global) batch.
  if (familyOf(config_).biasCorrectedRouter())
    updateCorrectionBiases(config_, params_, out.expertLoads);
  for (auto& item : params_) rec.paramChecksums.push_back(checksum(item.key(), item.value()));
  return rec;
}

TrainResult train(const ModelConfig& config, const TrainOptions& options) {
  return train(config, initParameters(config, options.seed), options);
}

TrainResult train(const ModelConfig& config, const ParamMap& initialParams,
                  const TrainOptions& options) {
  TrainResult r;
  r.initialParams = cloneParams(initialParams, torch::kFloat);
  Trainer trainer(config, initialParams, options);
  for (int64_t s = 1; s <= options.steps; ++s) {
    r.steps.push_back(trainer.step());
    if (s == 1) r.gradsStep1 = cloneParams(trainer.lastGrads());
  }
  r.finalParams = cloneParams(trainer.params());
  return r;
}

}  // namespace moe::ref
