#pragma once
// The checks of distributed checkpoints (issue 19):
//  - checkpoint_complete (a run that saved): the checkpoint holds every
//    tensor the run must save (parameters and both AdamW moments), every
//    global element of each in exactly one piece, no piece key in two rank
//    files, expert tensors covered expert by expert, every piece's content
//    hash right, and the journal shows COMPLETE written after every rank
//    file and metadata.json.
//  - resume_parity (a resumed run): the state it loaded at step k
//    (parameters and moments, on its own mesh, plan and wrapper) equals the
//    uninterrupted single-device reference's state at step k, its per-step
//    losses equal the reference's steps k+1..n, and its final parameters the
//    reference's, within the case's tolerances.
// Each has a pure core (tested without ranks) and a registered collective
// wrapper (every rank agrees on the verdict).
#include <string>
#include <vector>

#include "harness/checks/check_context.h"
#include "reference/io/expert_layout.h"

namespace moe::checks {

// "" when the checkpoint in `dir` passes (see above), else the first
// problem: the file, the tensor and the gap, overlap, hash or order.
// `measured` receives tensors, pieces, bytes, world size.
//   expectedTensors: every saved name; expertTensors: those that are experts
//   (dim 0 = global expert index).
std::string checkpointProblem(const std::string& dir, const std::vector<std::string>& expectedTensors,
                              const std::vector<std::string>& expertTensors, nlohmann::json& measured);

// The same for the consolidated Hugging Face layout (parallel/hf_checkpoint.h):
// trainer_state.json and the files open (every experts module holds experts
// 0..E-1 once each: FusedExpertView's validation), every expected tensor and
// no other is there, and every tensor's content hash matches the one
// recorded when it was assembled from the verified sharded pieces.
std::string hfCheckpointProblem(const std::string& dir, const io::FusedViewOptions& view,
                                const std::vector<std::string>& expectedTensors, nlohmann::json& measured);

struct ResumeParityInputs {
  int rank = 0;
  std::vector<int> meshSizes, meshCoords;
  int64_t resumedFromStep = 0;
  const std::vector<ParamShard>* resumedState = nullptr;     // loaded at k, saved names
  const io::TensorSource* referenceStateAtResume = nullptr;  // reference at k, same names
  const std::vector<StepRecord>* runSteps = nullptr;         // steps k+1..n of the run
  const std::vector<StepRecord>* referenceSteps = nullptr;   // the reference's steps k+1..n
  const std::vector<ParamShard>* finalParams = nullptr;
  const io::TensorSource* referenceParams = nullptr;         // the reference's final parameters
  // The reference's gradients of GLOBAL step 1 and its grad norm: the
  // per-element AdamW allowance of parameters (parity_check.h
  // adamwAllowance, which is derived from step 1's gradients) is taken from
  // them, with k steps for the loaded parameters and n for the final ones:
  // the same allowance the saving run's own parity check gave its state at
  // k. (Step k+1's gradients were used before: an element whose step-1
  // gradient is near zero but step k+1's is not got a 1e-9 allowance for a
  // state that legitimately moved by 3e-6.)
  const io::TensorSource* referenceGrads = nullptr;
  double referenceGradNorm = 0;
};
// This rank's first failure ("" = passed) and the measured maxima.
std::string resumeParityProblem(const ResumeParityInputs& in, const ParityCheckOptions& options,
                                nlohmann::json& measured);

class CheckpointCompleteCheck : public Check {
 public:
  CheckpointCompleteCheck()
      : Check({"checkpoint_complete",
               "the saved distributed checkpoint holds every parameter and AdamW moment, every global element in "
               "exactly one piece (experts under their global index, no key twice), every piece's hash matches, "
               "and COMPLETE was written after all data",
               CheckStage::kAfterLastStep, 90, "mesh, savedCheckpoint, savedTensors, savedExpertTensors",
               "exact: coverage counts, FNV-1a 64 hashes and the journal order"}) {}
  bool applies(const CheckContext& ctx) const override { return !ctx.savedCheckpoint.empty(); }
  CheckResult run(const CheckContext& ctx) const override;
};

class ResumeParityCheck : public Check {
 public:
  ResumeParityCheck()
      : Check({"resume_parity",
               "a run resumed at step k loads the uninterrupted reference's parameters and AdamW moments of step "
               "k, and its losses of steps k+1..n and final parameters equal the reference's",
               CheckStage::kAfterLastStep, 41,
               "mesh, resumedState, referenceStateAtResume, runSteps, referenceSteps, finalParams, referenceParams",
               "the case's parity tolerance (loss_abs; tensors by its metric, parameters with the AdamW allowance)"}) {}
  bool applies(const CheckContext& ctx) const override { return ctx.resumedFromStep >= 0; }
  CheckResult run(const CheckContext& ctx) const override;
};

}  // namespace moe::checks
