#pragma once
// The inputs and options of the built-in checks, and the plug-in interface
// (Check) the registry holds (Registry<Check>, check_registry.h). A run
// (harness/conformance/run_plan.cpp) fills one CheckContext per rank and runs
// every registered check that applies, in stage order; each check reads only
// the fields it needs and throws HarnessError naming the missing field when
// one is absent.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "harness/checks/check.h"
#include "harness/checks/measured_memory_check.h"
#include "harness/checks/placement_expectation.h"
#include "harness/comm/flight_recorder.h"
#include "harness/mesh/device_mesh.h"
#include "reference/io/tensor_source.h"
#include "reference/model/config.h"
#include "reference/plan/plan.h"
#include "reference/train/nonfinite_value.h"
#include "reference/train/step_record.h"

namespace moe::checks {

// ---- placement ------------------------------------------------------------
// Parameters that must be identical across the ranks of some mesh dims.
struct ReplicatedRule {
  std::string pattern;             // exact name, or '*' for one dotted segment
  std::vector<std::string> dims;   // mesh dims they are identical over; empty = all
};

struct PlacementCheckOptions {
  double rtol = 0;  // values vs the checkpoint slice; 0, 0 = bitwise equal
  double atol = 0;
  bool compareValues = true;
  // Which parameters must be sharded is not listed here: each shard says
  // whether its style declares sharding (ParamShard::shardedByStyle, from
  // PlanStyle::shardsParameters), so a new style needs no entry anywhere.
  // Over which dims each unnamed parameter must be identical; first match
  // wins; a parameter no rule matches is compared over the whole world.
  std::vector<ReplicatedRule> replicated;
};

// ---- expert uniqueness ----------------------------------------------------
struct ExpertCheckOptions {
  // Mesh dims whose ranks must hold disjoint expert sets covering all experts.
  std::vector<std::string> coverDims = {"ep"};
  bool compareCheckpoint = true;
  // On a checkpoint mismatch, read the other experts' checkpoint slices to
  // name the expert the rank actually holds (costs one read per expert, only
  // when something is wrong).
  bool identifyMisplaced = true;
};

// ---- parity -----------------------------------------------------------------
// One optimizer step of a run (or of the single-device reference): the
// trainers' record (reference/train/step_record.h).
using ref::StepRecord;

enum class TensorMetric {
  kAllClose,  // |run - ref| <= atol + rtol * |ref| element-wise
  kRelNorm,   // ||run - ref|| / max(||ref||, tiny) <= relNorm per tensor
};

struct ParityTolerance {
  double lossAbs = 1e-5;  // loss, ce and aux: |run - ref|
  TensorMetric metric = TensorMetric::kAllClose;  // grads, params, grad norm
  double rtol = 1e-4;
  double atol = 1e-6;
  double relNorm = 2e-2;
  // The defaults of a precision policy: "fp32" or "bf16" (else HarnessError).
  static ParityTolerance forDtype(const std::string& dtype);
  std::string describe() const;  // "allclose(rtol 1e-4, atol 1e-6)" / "relative norm error <= 2e-2"
};

// The optimizer a run's final parameters went through, for the AdamW
// allowance on final parameters (parity_check.h, adamwAllowance). lr <= 0:
// no allowance (final parameters judged by the tolerance alone).
struct ParityOptimizer {
  double lr = 0;
  double eps = 1e-8;
  double maxGradNorm = 0;  // clip_grad_norm_ max_norm; <= 0: no clipping
};

struct ParityCheckOptions {
  std::string dtype = "fp32";                // picks the default tolerance
  std::optional<ParityTolerance> tolerance;  // overrides the dtype's defaults
  ParityOptimizer optimizer;                 // the run's AdamW (run_plan fills it)
  ParityTolerance resolved() const {
    return tolerance ? *tolerance : ParityTolerance::forDtype(dtype);
  }
};

// ---- communication --------------------------------------------------------
using CommCounters = std::map<std::pair<std::string, comm::OpType>, comm::OpCounter>;

// What a step is expected to issue: declared by the implementation.
using parallel::CommExpectation;

struct CommCheckOptions {
  // A (group, op) with calls that no expectation lists is an error unless
  // its group is listed here.
  std::vector<std::string> ignoreGroups;
  double bytesRtol = 0;  // |measured - expected| <= bytesRtol * expected
};

// ---- the data-parallel wrapper's checks (wrapper_checks.h) ---------------
struct MemoryInputs {
  int64_t paramBytes = 0;      // the wrapper's fp32 masters on this rank
  int64_t gradBytes = 0;       // its fp32 gradients
  int64_t optimizerBytes = 0;  // its AdamW state
  // What the replicated ("none") layout holds on this rank: every plan-local
  // parameter whole, fp32, with a gradient and two AdamW moments (16 B/elem).
  int64_t replicatedBytes = 0;
  // Bytes (fp32) of the elements this rank's parameters hold according to
  // their reported placements (sum of computeLayout(...).numel() * 4).
  int64_t placementParamBytes = 0;
  // Of paramBytes: padding the wrapper keeps beyond those elements (flat
  // buffers padded to even partitions); the memory check requires
  // paramBytes == placementParamBytes + paddingBytes.
  int64_t paddingBytes = 0;
};
struct MemoryCheckOptions {
  double expectedFactor = 0;  // world total / replicated world total; 0 = not asserted
  double factorTol = 1e-9;    // the factor is a ratio of exact byte counts
};

struct GradScaleOptions {
  double tol = 1e-5;        // |ratio - 1| <= tol
  bool expertsOnly = true;  // only ParamShard::isExpert tensors
};

// ---- the plug-in interface ----------------------------------------------
// What a check reads from the run: the run's state at that point must exist
// before the check can run. run-plan runs the after-loading checks right
// after loading (before step 1 changes anything) and every other check after
// the last step, from the snapshots it kept.
enum class CheckStage {
  kAfterLoad,      // the loaded shards (and a flat-partitioning store's partitions)
  kAfterStep1,     // step 1's gradients, parameters, collectives and dispatch
  kAfterLastStep,  // the per-step values, the final parameters, memory
};
// "after loading" | "after step 1" | "after the last step".
std::string stageName(CheckStage stage);

// A check's token dispatch in step 1 (communication check).
struct DispatchInputs {
  int64_t sentRows = 0;      // rows this rank sent to the ep group in step 1 (every MoE layer)
  int64_t globalTokens = 0;  // batch x sequence length of the global batch
};

struct CheckContext {
  mesh::DeviceMesh* mesh = nullptr;  // collective checks run over mesh->world()
  // The run's plan, model and dtype (fp32 | bf16).
  const plan::AppliedPlan* plan = nullptr;
  const ref::ModelConfig* config = nullptr;
  std::string dtype = "fp32";
  int64_t steps = 0;  // steps the run trained; checks of step 1 apply when >= 1

  // ---- after loading
  // Parameters as placed by the plan (and the wrapper), before training.
  const std::vector<ParamShard>* params = nullptr;
  const io::TensorSource* checkpoint = nullptr;
  // A flat-partitioning wrapper's partitions after loading
  // (ParamStore::flatPartitions()); empty: the wrapper holds tensors as
  // `params` describe them.
  const std::vector<FlatPartition>* flatPartitions = nullptr;
  // The case's expected placements (empty or null: none to compare).
  const std::vector<PlacementExpectation>* expectedPlacements = nullptr;

  // ---- per step / after the last step
  const std::vector<StepRecord>* runSteps = nullptr;
  const std::vector<StepRecord>* referenceSteps = nullptr;
  const std::vector<ParamShard>* step1Grads = nullptr;   // local gradient shards
  const io::TensorSource* referenceGrads = nullptr;      // full gradients of the run's first step
  // A resumed run only (null otherwise): the reference's gradients of global
  // step 1 and their norm, the AdamW allowance's basis (ParityInputs).
  const io::TensorSource* referenceGlobalStep1Grads = nullptr;
  double referenceGlobalStep1GradNorm = 0;
  const std::vector<ParamShard>* finalParams = nullptr;  // after the last step
  const io::TensorSource* referenceParams = nullptr;     // full final params

  // ---- step 1
  const std::vector<ParamShard>* step1Params = nullptr;  // parameters after step 1
  const CommCounters* commDelta = nullptr;  // counters of the measured window (step 1)
  const std::vector<CommExpectation>* commExpected = nullptr;  // what the plan implies for it
  const DispatchInputs* dispatch = nullptr;
  // The data-parallel wrapper (ParamStore): its name (its groups are
  // "<wrapper>:..."), what it declares it issued in step 1 on those groups,
  // and the prefix of its per-parameter gather groups ("" = none,
  // ParamStore::parameterGatherPrefix()).
  std::string wrapper;
  const std::vector<CommExpectation>* wrapperCommExpected = nullptr;
  std::string parameterGatherPrefix;
  int64_t computeElementBytes = 4;  // bytes of the compute dtype (bf16: 2)

  // ---- finite (after the last step)
  // This rank's non-finite values at the first step that had any (run-plan
  // scans every step; empty: none), and the reference's (findNonFinite).
  const std::vector<ref::NonFiniteValue>* runNonFinite = nullptr;
  const std::vector<ref::NonFiniteValue>* referenceNonFinite = nullptr;

  // ---- memory (after the last step)
  const MemoryInputs* memory = nullptr;                         // this rank's
  const std::vector<MeasuredMemory>* measuredMemory = nullptr;  // every rank's, rank order

  // ---- checkpoints (issue 19; after the last step)
  // The distributed checkpoint this run saved ("" = none): checkpoint_complete.
  std::string savedCheckpoint;
  // Every tensor it must hold (parameters and "optimizer.exp_avg/..." /
  // "optimizer.exp_avg_sq/..." moments), and which of them are experts.
  std::vector<std::string> savedTensors;
  std::vector<std::string> savedExpertTensors;
  nlohmann::json saveStats;  // bytes and seconds of the save, reported
  // Rank 0: a problem the save itself found before converting its sharded
  // staging copy to the consolidated layout ("" = none); the checkpoint was
  // then left unconverted in "<savedCheckpoint>.sharded".
  std::string saveProblem;
  // A resumed run (resumedFromStep >= 0): its state right after loading
  // (parameters and moments under the saved names, as shards) and the
  // uninterrupted single-device reference's state at that step (same names):
  // resume_parity. runSteps/referenceSteps then hold only the steps run.
  int64_t resumedFromStep = -1;
  const std::vector<ParamShard>* resumedState = nullptr;
  const io::TensorSource* referenceStateAtResume = nullptr;

  PlacementCheckOptions placement;
  // Empty cover dims: the dims the expert tensors' placements split their
  // expert dim over (ep; plus the expert-data-parallel dims under fsdp).
  ExpertCheckOptions expert{/*coverDims=*/{}};
  ParityCheckOptions parity;
  CommCheckOptions communication;
  MemoryCheckOptions memoryOptions;
  MeasuredMemoryOptions measuredMemoryOptions;
};

// A check: one class in its own file, registered there with one line,
// MOE_REGISTER(Check, MyCheck) (how to add one: check_registry.h).
// What a check is, apart from what it does: given once to its constructor.
struct CheckInfo {
  std::string name;         // "placement": the name results and cases use
  std::string description;  // one line for listings
  CheckStage stage;         // the state of the run it reads (when run-plan can run it)
  int order;                // where its verdict appears among a run's checks (ascending; ties by name)
  std::string inputs;       // the CheckContext fields it reads, e.g. "mesh, params, checkpoint"
  // Where its tolerance comes from, e.g. "exact: bitwise equal to the
  // checkpoint" or "the case's tolerances per dtype".
  std::string toleranceSource;
};

class Check {
 public:
  static constexpr const char* kPluginKind = "check";
  explicit Check(CheckInfo info) : info_(std::move(info)) {}
  virtual ~Check() = default;
  const std::string& name() const { return info_.name; }
  const std::string& description() const { return info_.description; }
  CheckStage stage() const { return info_.stage; }
  int order() const { return info_.order; }
  const std::string& inputs() const { return info_.inputs; }
  const std::string& toleranceSource() const { return info_.toleranceSource; }
  // Whether it concerns this run (decided from the context's data, never
  // from a wrapper's or a style's name). Default: every run.
  virtual bool applies(const CheckContext& ctx) const {
    (void)ctx;
    return true;
  }
  // Collective over ctx.mesh->world(): every rank calls it; all return the
  // same verdict. Throws HarnessError when a needed input is missing.
  virtual CheckResult run(const CheckContext& ctx) const = 0;

 private:
  CheckInfo info_;
};

// Throws HarnessError "<check>: no <what> given" when `p` is null.
template <typename T>
T& require(T* p, const char* check, const char* what) {
  if (!p) moe::fail(check, ": no ", what, " given");
  return *p;
}

}  // namespace moe::checks
