#pragma once
// The single-device reference run (the `moe-harness reference` command) of one config,
// dtype and seed, written as files the parity checks compare against.
//
//   moe-harness reference --config C [--checkpoint DIR] --steps N
//       --dtype fp32|bf16 --seed S --out DIR
//       [--batch-size B] [--seq-len L] [--lr X] [--beta1 X] [--beta2 X]
//       [--eps X] [--weight-decay X] [--max-grad-norm X]
//       [--experts-impl loop|grouped] [--threads T]
//
// Writes to DIR:
//   config.json               the validated config (HF field names)
//   model.safetensors         initial fp32 weights (fused expert layout)
//   batches.safetensors       step_<n>: [B, S] int64 for n = 1..N
//   losses.json               per step loss/ce/aux/grad_norm and checksums of
//                             every parameter and gradient; every hyperparameter
//   grads_step1.safetensors   gradients of step 1, before clipping (fp32)
//   model_final.safetensors   parameters after the last step (fp32)
#include <cstdint>
#include <string>

#include "reference/model/params.h"
#include "reference/train/trainer.h"

namespace moe::ref {

struct ReferenceRunOptions {
  std::string configPath;
  std::string checkpoint;  // empty: deterministic init from the seed
  std::string outDir;
  std::string dtype = "fp32";
  std::string expertsImpl;  // empty: the config's experts_implementation
  int threads = 1;          // intra-op threads; fixed so runs are bitwise repeatable
  TrainOptions train;
};

// Loads every parameter the config needs from a safetensors checkpoint: a
// directory holding model.safetensors, or the file itself. Experts may be in
// the fused or the Hugging Face per-expert layout. Tensors are converted to
// fp32. Throws HarnessError naming the file and tensor for a missing tensor,
// a wrong shape or an unexpected extra tensor (lm_head.weight of a tied
// model is ignored).
ParamMap loadCheckpoint(const std::string& path, const ModelConfig& config);

// Runs the reference and writes the files listed above.
void runReference(const ReferenceRunOptions& options);

}  // namespace moe::ref
