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
  double allowanceAtWorst = 0;  // the extra allowance at worstAt (allclose)
};
// run, ref: the same shape. `layout` (optional) names global indices.
// `allowance` (optional, the same shape, >= 0): an extra per-element bound
// added to the tolerance: allclose passes |run - ref| <= atol + rtol|ref| +
// allowance; the relative norm passes ||run - ref|| <= relNorm ||ref|| +
// ||allowance||.
TensorDiff compareTensor(const at::Tensor& run, const at::Tensor& ref, const ParityTolerance& tol,
                         const ref::LocalLayout* layout = nullptr, const at::Tensor* allowance = nullptr);

// The AdamW allowance on final parameters, per element.
//
// Why: two runs whose step-1 gradients agree within the gradient tolerance
// can still hold visibly different parameters after AdamW, because AdamW
// normalises each element: its step-1 update is lr * u(g) with
// u(x) = x / (|x| + eps), and u moves by up to 2 (a sign flip) when g is
// within the gradient tolerance of zero. Measured on libtorch 2.15 (MKL):
// tp2_moe_tp.fp32 element [3, 7, 20] of layers.1 gate_up_proj has a step-1
// gradient of -2.99e-9 (the tensor's median |g| is 1.1e-4), and the K-split
// tensor-parallel matmul's rounding moved it by 3.4e-6 after 4 steps against
// an allowed 1.6e-6, while every gradient was within 3.7e-8.
//
// Derivation: a gradient the check accepts lies in [g - eta, g + eta] with
// eta = atol + rtol |g| (allclose) or eta = relNorm * rms(g) (relative norm:
// the bound's uniform share per element). u is monotone, so the step-1
// update can move by at most
//   w = max(u(c(g + eta)) - u(cg), u(cg) - u(c(g - eta)))   (0 <= w <= 2)
// where c = min(1, maxGradNorm / gradNorm) is step 1's clipping factor
// (clipping scales g before AdamW; u is not scale-free because of eps).
// Later steps start from that state: v-hat holds step 1's g^2, so an element
// well conditioned at step 1 stays so and one ill-conditioned at step 1 can
// move as much again; the allowance is steps * lr * w. For an element with
// |g| >> sqrt(eps * eta) this is below 1e-9 (w ~ eps*eta/g^2), so the
// tolerance still judges every well-conditioned element as before.
// refGrad: the reference's step-1 gradient slice [same shape as the
// parameter shard]; returns kDouble of that shape.
at::Tensor adamwAllowance(const at::Tensor& refGrad, const ParityTolerance& tol, const ParityOptimizer& optimizer,
                          int64_t steps, double clipFactor);

// Where a run's AdamW allowance comes from: the reference's gradients of
// global step 1 (null: none known, no allowance) and step 1's clipping
// factor c = min(1, maxGradNorm / gradNorm) (gradNorm <= 0: not clipped).
struct AdamwAllowanceBasis {
  const io::TensorSource* grads = nullptr;
  double clipFactor = 1;
};
AdamwAllowanceBasis adamwAllowanceBasis(const io::TensorSource* globalStep1Grads, double globalStep1GradNorm,
                                        const ParityOptimizer& optimizer);
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
  // The AdamW allowance's basis (adamwAllowance): the reference's gradients
  // of GLOBAL step 1 and its grad norm (the clip factor). Null: a run from
  // step 1, whose referenceGrads and referenceSteps->front() are step 1's.
  // A resumed run's referenceGrads are those of its first step (k+1), which
  // do not describe how far steps 1..k could move a parameter.
  const io::TensorSource* allowanceGrads = nullptr;
  double allowanceGradNorm = 0;
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
