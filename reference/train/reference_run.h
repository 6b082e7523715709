#pragma once
// The single-device reference run (the `moe-harness reference` command) of one config,
// dtype and seed, written as files the parity checks compare against.
//
//   moe-harness reference --config C [--checkpoint DIR] --steps N
//       --dtype fp32|bf16 --seed S --out DIR [--first-step F]
//       [--batch-size B] [--seq-len L] [--lr X] [--beta1 X] [--beta2 X]
//       [--eps X] [--weight-decay X] [--max-grad-norm X]
//       [--experts-impl loop|grouped] [--threads T]
//
// Writes to DIR:
//   config.json               the validated config (HF field names)
//   model.safetensors         initial fp32 weights (fused expert layout)
//   batches.safetensors       step_<n>: [B, S] int64 for n = F..F+N-1 (F = 1
//                             unless --first-step: a checkpoint's data position)
//   losses.json               per step loss/ce/aux/grad_norm and checksums of
//                             every parameter and gradient; every hyperparameter
//   grads_step1.safetensors   gradients of the first step (F), before clipping (fp32)
//   model_final.safetensors   parameters after the last step (fp32)
#include <cstdint>
#include <string>
#include <vector>

#include "reference/io/tensor_source.h"
#include "reference/model/params.h"
#include "reference/train/nonfinite_value.h"
#include "reference/train/trainer.h"

namespace moe::ref {

struct ReferenceRunOptions {
  std::string configPath;
  std::string checkpoint;  // empty: deterministic init from the seed
  std::string outDir;
  std::string dtype = "fp32";
  std::string expertsImpl;  // empty: the config's experts_implementation
  int threads = 1;          // intra-op threads; fixed so runs are bitwise repeatable
  // A checkpoint holding NaN or Inf is refused (HarnessError naming the file,
  // the tensor, the first index and the count) unless this is set.
  bool allowNonFiniteCheckpoint = false;
  TrainOptions train;
};

struct CheckpointOptions {
  bool allowNonFinite = false;  // load NaN / Inf values instead of refusing them
};

// Loads every parameter the config needs from a safetensors checkpoint: any
// path io::openCheckpoint accepts (a directory holding model.safetensors or
// a Hugging Face sharded model.safetensors.index.json, the file itself, or
// the index). Experts may be in
// the fused or the Hugging Face per-expert layout. Tensors are converted to
// fp32. Throws HarnessError naming the file and tensor for a missing tensor,
// a wrong shape or an unexpected extra tensor (lm_head.weight of a tied
// model is ignored), and for a tensor holding NaN or Inf unless
// options.allowNonFinite ("<file>: tensor 'NAME' holds non-finite values:
// index [i, j] (flat f) is nan; k of n elements are non-finite ...", before
// any training).
ParamMap loadCheckpoint(const std::string& path, const ModelConfig& config,
                        const CheckpointOptions& options = {});
// The same from a checkpoint already open (messages name source.where(), and
// the file holding the tensor for non-finite values).
ParamMap loadCheckpoint(const io::TensorSource& source, const ModelConfig& config,
                        const CheckpointOptions& options = {});

// The checks of loadCheckpoint (every tensor present, shaped as the config
// says, nothing extra, finite unless allowed) without keeping the tensors:
// one tensor is in memory at a time.
void validateCheckpoint(const io::TensorSource& source, const ModelConfig& config,
                        const CheckpointOptions& options = {});

// The non-finite values of the first step of `result` that has any: its
// non-finite loss, ce, aux and grad norm, the first non-finite gradient and
// the first non-finite parameter (by name). Gradients and parameters are
// found from the records' checksums (their sums are not finite) and located
// to an index where the tensor is kept (step-1 gradients, final parameters).
// Empty when every value of every step is finite.
std::vector<NonFiniteValue> findNonFinite(const TrainResult& result);
// The same from the records and, where kept, the first step's gradients and
// the last step's parameters (null or missing names: located by checksum only).
std::vector<NonFiniteValue> findNonFinite(const std::vector<StepRecord>& steps, const ParamMap* gradsStep1,
                                          const ParamMap* finalParams);
// "step 2: loss is nan; step 2: gradient of lm_head.weight: index ..." (joined by "; ").
std::string describeNonFinite(const std::vector<NonFiniteValue>& values);

// Runs the reference and writes the files listed above. A run whose loss,
// gradients or parameters become non-finite is a user error (HarnessError,
// exit 2 from the CLI) naming the step and the first tensor; nothing is
// written then (a non-finite reference cannot serve as one).
void runReference(const ReferenceRunOptions& options);

}  // namespace moe::ref
