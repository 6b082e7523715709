#pragma once
// The parity check: a distributed run against the single-device reference
// of the same config, dtype and seed.
//  - per step: loss, CE and aux (|run - ref| <= lossAbs) and the grad norm
//    (the tensor metric applied to the scalar);
//  - after step 1: every parameter's local gradient shard against the
//    matching slice of the reference's full gradient (the shard's layout
//    picks the slice);
//  - after the last step: every parameter likewise.
// Tolerances come from the case per dtype (ParityTolerance::forDtype gives
// the defaults). The measured maxima are always reported, with the worst
// parameter, its relative norm error and its run/reference norm ratio: a
// gradient-scale bug shows as an exact ratio (2.000 = twice too large).
#include <string>
#include <vector>

#include "harness/checks/check_context.h"
#include "reference/placement/layout.h"

namespace moe::checks {

// ---- pure parts (unit-tested) ----------------------------------------------
struct TensorDiff {
  bool ok = true;
  double maxAbsDiff = 0;
  double relNormError = 0;  // ||run - ref|| / max(||ref||, tiny)
  double normRatio = 1;     // ||run|| / ||ref|| (inf when only ref is zero)
  // How far outside the tolerance (<= 1 passes): max |d| / (atol + rtol|ref|)
  // for allclose, relNormError / relNorm for the relative norm.
  double score = 0;
  std::string worstAt;  // "global [0, 3] (run 1 vs reference 0.5)"
};
// run, ref: the same shape. `layout` (optional) names global indices.
TensorDiff compareTensor(const at::Tensor& run, const at::Tensor& ref, const ParityTolerance& tol,
                         const ref::LocalLayout* layout = nullptr);
// "rank 1: step-1 gradient of NAME: relative norm error 1 (run/reference norm
// ratio 2.000) exceeds 0.02; max |diff| ..." (what = "step-1 gradient").
std::string describeTensorFailure(int rank, const std::string& what, const std::string& name,
                                  const TensorDiff& d, const ParityTolerance& tol);
// "1e-05", "0.0001", "2.5": the short form used in messages.
std::string formatNumber(double x);
// An expert tensor ([E, ...], experts on dim 0) that failed: when the run's
// first failing expert row g equals (within `tol`) the reference's rows g
// and h summed for some other expert h, "; its expert g holds the
// reference's experts g + h summed (e.g. run x vs reference y + z): ..."
// (the signature of a reduction over a group of ranks that hold different
// experts); else "". Reads the reference row by row through `layout`.
// run: [layout.localShape]
std::string mixedExpertsDiagnosis(const at::Tensor& run, const ref::LocalLayout& layout,
                                  const io::TensorSource& reference, const std::string& name,
                                  const ParityTolerance& tol);

// ---- the check ----------------------------------------------------------------
struct ParityInputs {
  int rank = 0;                  // global rank, for messages
  std::vector<int> meshSizes;    // for the shards' layouts (ref::meshSizes)
  std::vector<int> meshCoords;   // this rank's coordinates
  const std::vector<StepRecord>* runSteps = nullptr;
  const std::vector<StepRecord>* referenceSteps = nullptr;
  const std::vector<ParamShard>* step1Grads = nullptr;   // null = not compared
  const io::TensorSource* referenceGrads = nullptr;
  const std::vector<ParamShard>* finalParams = nullptr;  // null = not compared
  const io::TensorSource* referenceParams = nullptr;
};

// The inputs the context holds for this rank (rank, mesh sizes and coords
// from ctx.mesh; throws HarnessError when it is null).
ParityInputs parityInputsOf(const CheckContext& ctx);

// Local: compares this rank's data only (no communication).
CheckResult checkParity(const ParityInputs& in, const ParityCheckOptions& options = {});
// Collective over `world`: every rank runs checkParity, then the verdict, the
// maxima and the worst parameters are agreed over all ranks. The relative-
// norm metric (bf16) applies to each WHOLE tensor here, as the tolerance is
// stated: every rank contributes its pieces' squared norms, weighted by
// 1 / (ranks replicating them), so no element counts twice; a local piece
// above the tolerance alone does not fail (its numbers stay in `measured`).
CheckResult checkParityCollective(comm::Communicator& world, const ParityInputs& in,
                                  const ParityCheckOptions& options = {});

class ParityCheck : public Check {
 public:
  ParityCheck()
      : Check(
            {"parity",
             "per-step loss/ce/aux/grad norm, step-1 gradients and final parameters equal the "
             "single-device reference within the dtype's tolerances",
             CheckStage::kAfterLastStep, 40,
             "mesh, runSteps, referenceSteps, step1Grads, referenceGrads, finalParams, referenceParams, parity options",
             "the case's tolerance for the run's dtype (run-plan --tolerance); without one "
             "ParityTolerance::forDtype (fp32 allclose rtol 1e-4 atol 1e-6, bf16 relative norm 2e-2)"}) {}
  CheckResult run(const CheckContext& ctx) const override;
};

}  // namespace moe::checks
