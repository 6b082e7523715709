#include "harness/cli/reference_command.h"
#include "harness/cli/commands.h"

#include <CLI/CLI.hpp>

#include "reference/train/reference_run.h"

namespace moe::ref {

void addReferenceCommand(CLI::App& app) {
  auto opts = std::make_shared<ReferenceRunOptions>();
  auto* sub = app.add_subcommand("reference", "Single-device reference training run of one config");
  sub->add_option("--config", opts->configPath, "model config JSON (HF field names)")
      ->required()->check(CLI::ExistingFile);
  sub->add_option("--checkpoint", opts->checkpoint,
                  "safetensors checkpoint: a dir with model.safetensors or a sharded "
                  "model.safetensors.index.json, the file, or the index; fused or HF per-expert layout. "
                  "Default: deterministic init from --seed");
  sub->add_flag("--allow-nonfinite-checkpoint", opts->allowNonFiniteCheckpoint,
                "load a checkpoint holding NaN or Inf (refused by default: a user error naming the tensor)");
  sub->add_option("--steps", opts->train.steps, "training steps")->required();
  sub->add_option("--dtype", opts->dtype, "precision policy")
      ->check(CLI::IsMember({"fp32", "bf16"}))->capture_default_str();
  sub->add_option("--seed", opts->train.seed, "seed of init and data")->capture_default_str();
  sub->add_option("--first-step", opts->train.firstStep,
                  "train the batches of steps FIRST.. (a checkpoint's data position: the step after the one it was "
                  "saved at; AdamW starts fresh, so the first step's loss is the saving run's)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--out", opts->outDir, "output directory")->required();
  sub->add_option("--batch-size", opts->train.batchSize, "global batch rows")->capture_default_str();
  sub->add_option("--seq-len", opts->train.seqLen, "sequence length")->capture_default_str();
  sub->add_option("--lr", opts->train.adamw.lr, "AdamW lr")->capture_default_str();
  sub->add_option("--beta1", opts->train.adamw.beta1, "AdamW beta1")->capture_default_str();
  sub->add_option("--beta2", opts->train.adamw.beta2, "AdamW beta2")->capture_default_str();
  sub->add_option("--eps", opts->train.adamw.eps, "AdamW eps")->capture_default_str();
  sub->add_option("--weight-decay", opts->train.adamw.weightDecay, "AdamW weight decay")
      ->capture_default_str();
  sub->add_option("--max-grad-norm", opts->train.maxGradNorm, "clip_grad_norm_ max_norm (<= 0: off)")
      ->capture_default_str();
  sub->add_option("--experts-impl", opts->expertsImpl, "override experts_implementation")
      ->check(CLI::IsMember({"loop", "grouped"}));
  sub->add_option("--threads", opts->threads, "intra-op threads")->capture_default_str();
  sub->callback([opts] { runReference(*opts); });
}

}  // namespace moe::ref

namespace moe::cli {
MOE_REGISTER(Command, FunctionCommand, "reference", moe::ref::addReferenceCommand);
}  // namespace moe::cli
