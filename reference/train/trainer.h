#pragma once
// Single-device reference trainer: init -> N steps of (synthetic batch,
// forward, loss, backward, clip, AdamW), recording per step the loss parts,
// the gradient norm and a checksum of every parameter and gradient.
// deepseek_v3's correction biases (isCorrectionBias) get no gradient and no
// AdamW: after the optimizer step the balancing rule of deepseek_v3.h
// updates them from the step's expert loads (their gradient is recorded as 0).
//
// Bitwise determinism: with the same config, options and libtorch build, two
// runs give identical records provided the intra-op thread count is the same
// (callers pin it, e.g. at::set_num_threads(1); the trainer does not touch
// global state).
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "reference/model/config.h"
#include "reference/model/params.h"
#include "reference/train/optimizer.h"
#include "reference/train/step_record.h"
#include "reference/train/synthetic_data.h"

namespace moe::ref {

// fp32: everything fp32. bf16: fp32 masters and AdamW state, forward and
// backward in bf16 (weights cast from the masters at use), norm statistics,
// softmaxes and loss in fp32, gradients accumulated on the fp32 masters.
enum class Precision { kFp32, kBf16 };
Precision parsePrecision(const std::string& s);  // "fp32" | "bf16", else HarnessError
std::string precisionName(Precision p);
torch::ScalarType computeDtype(Precision p);

struct TrainOptions {
  int64_t steps = 20;
  Precision precision = Precision::kFp32;
  uint64_t seed = 0;  // seeds the init and the data
  int64_t batchSize = 4;
  int64_t seqLen = 16;
  AdamWOptions adamw;       // torch.optim.AdamW defaults
  double maxGradNorm = 1.0; // clip_grad_norm_ max_norm; <= 0 disables clipping
  // The 1-based step whose batch is trained first: a checkpoint's data
  // position (its "data_position", the step after the one it was saved at).
  // Records carry these global step numbers. AdamW starts fresh either way.
  int64_t firstStep = 1;
};

// Sums in double and the FNV-1a hash of the raw bytes. Reads the tensor in
// blocks: no double copy of it (a realistic expert tensor is 1.6 GB in fp32).
TensorChecksum checksum(const std::string& name, const torch::Tensor& t);

// StepRecord, TensorChecksum: reference/train/step_record.h.

// The global batch of 1-based step `step`: [batchSize, seqLen] int64.
torch::Tensor trainBatch(const ModelConfig& config, const TrainOptions& options, int64_t step);

// Called by Trainer::step() after the backward and before clipping, with the
// step's record so far (step, loss parts, gradChecksums) and every
// parameter's gradient (the live tensors: read, never keep or modify them).
// E.g. the reference run streams step 1's gradients to disk from here instead
// of keeping a copy (lastGrads()).
using GradientObserver = std::function<void(const StepRecord& partial, const ParamMap& grads)>;

class Trainer {
 public:
  // initialParams: fp32 masters (copied), e.g. initParameters(config, seed).
  Trainer(ModelConfig config, const ParamMap& initialParams, TrainOptions options);
  // The same, taking the given tensors as the masters (no copy; tensors not
  // in fp32 are converted): the caller gives up initialParams. For a model
  // whose state fills the memory (the reference at realistic width).
  Trainer(ModelConfig config, ParamMap&& initialParams, TrainOptions options);

  // keep = false: lastGrads() stays empty (no copy of every gradient per
  // step; a GradientObserver sees them instead). Default: kept.
  void keepLastGrads(bool keep) { keepLastGrads_ = keep; }
  void setGradientObserver(GradientObserver observer) { observer_ = std::move(observer); }

  // Runs one step on syntheticBatch(step) and returns its record.
  StepRecord step();

  // The batch of 1-based step `step`: [batchSize, seqLen] int64.
  torch::Tensor batch(int64_t step) const;

  const ParamMap& params() const { return params_; }  // fp32 masters
  // Gradients of the last step before clipping (detached fp32 copies).
  const ParamMap& lastGrads() const { return lastGrads_; }
  const TrainOptions& options() const { return options_; }
  const ModelConfig& config() const { return config_; }
  // AdamW's state (moments in params() order), e.g. for a resumed run's
  // judge: the state an uninterrupted run has at a step.
  const AdamW& optimizer() const { return optimizer_; }

 private:
  ModelConfig config_;
  TrainOptions options_;
  ParamMap params_;
  ParamMap lastGrads_;
  AdamW optimizer_;
  int64_t step_ = 0;
  bool keepLastGrads_ = true;
  GradientObserver observer_;

  void init();
};

struct TrainResult {
  std::vector<StepRecord> steps;
  ParamMap initialParams;  // fp32
  ParamMap gradsStep1;     // before clipping
  ParamMap finalParams;
};

// Init from options.seed, then options.steps steps.
TrainResult train(const ModelConfig& config, const TrainOptions& options);
// The same from given initial parameters (e.g. a loaded checkpoint).
TrainResult train(const ModelConfig& config, const ParamMap& initialParams,
                  const TrainOptions& options);

}  // namespace moe::ref
