#pragma once
// The inputs and options of the built-in checks, and the plug-in interface
// (Check) the registry holds. A run fills one CheckContext per rank and runs
// the selected checks on it; each check reads only the fields it needs and
// throws HarnessError naming the missing field when one is absent.
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "harness/checks/check.h"
#include "harness/comm/flight_recorder.h"
#include "harness/mesh/device_mesh.h"
#include "reference/io/tensor_source.h"

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
// One optimizer step of a run (or of the single-device reference).
struct StepRecord {
  int step = 0;  // 1-based
  double loss = 0;
  double ce = 0;
  double aux = 0;
  double gradNorm = 0;
};

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

struct ParityCheckOptions {
  std::string dtype = "fp32";                // picks the default tolerance
  std::optional<ParityTolerance> tolerance;  // overrides the dtype's defaults
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

// ---- the plug-in interface ----------------------------------------------
struct CheckContext {
  mesh::DeviceMesh* mesh = nullptr;  // collective checks run over mesh->world()
  // Parameters as placed by the plan (before training).
  const std::vector<ParamShard>* params = nullptr;
  const io::TensorSource* checkpoint = nullptr;

  const std::vector<StepRecord>* runSteps = nullptr;
  const std::vector<StepRecord>* referenceSteps = nullptr;
  const std::vector<ParamShard>* step1Grads = nullptr;   // local gradient shards
  const io::TensorSource* referenceGrads = nullptr;      // full step-1 gradients
  const std::vector<ParamShard>* finalParams = nullptr;  // after the last step
  const io::TensorSource* referenceParams = nullptr;     // full final params

  const CommCounters* commDelta = nullptr;  // counters of the measured window
  const std::vector<CommExpectation>* commExpected = nullptr;

  PlacementCheckOptions placement;
  ExpertCheckOptions expert;
  ParityCheckOptions parity;
  CommCheckOptions communication;
};

// A check: one class, registered with one line in check_registry.cpp.
class Check {
 public:
  virtual ~Check() = default;
  virtual std::string name() const = 0;         // "placement"
  virtual std::string description() const = 0;  // one line for `--list`
  // Collective over ctx.mesh->world(): every rank calls it; all return the
  // same verdict. Throws HarnessError when a needed input is missing.
  virtual CheckResult run(const CheckContext& ctx) const = 0;
};

// Throws HarnessError "<check>: no <what> given" when `p` is null.
template <typename T>
T& require(T* p, const char* check, const char* what) {
  if (!p) moe::fail(check, ": no ", what, " given");
  return *p;
}

}  // namespace moe::checks
