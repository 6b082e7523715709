#pragma once
// The finite check: a run whose loss, ce, aux, grad norm, gradients or
// parameters become non-finite (NaN, +-Inf) fails, naming the step, the
// rank, the first tensor and the index in it. Non-finite values are named,
// never compared: the parity check would fail too, but only this check says
// where the first non-finite value appeared.
//
// Inputs: run-plan scans every step's (global) loss, ce, aux and grad norm,
// and, at the first step where one is not finite, this rank's gradient and
// parameter shards (CheckContext::runNonFinite); the check itself scans the
// per-step records and the final parameters again, so it needs no scan to
// find a non-finite parameter after the last step. A non-finite reference
// (CheckContext::referenceNonFinite) fails it as well: the run cannot be
// judged against it.
#include <optional>
#include <string>
#include <vector>

#include "harness/checks/check_context.h"

namespace moe::checks {

// ---- pure parts (unit-tested) ----------------------------------------------
// The first shard (in order) holding a non-finite value, as a NonFiniteValue
// of `step` and `quantity` ("gradient", "parameter"); the detail names the
// local index and, where the placements give it, the global index:
// "local index [0, 3] (flat 3; global [4, 3]) is nan; 1 of 64 elements is non-finite".
// meshSizes / meshCoords: for the shards' layouts (empty: local index only).
std::optional<ref::NonFiniteValue> firstNonFiniteShard(int64_t step, const std::string& quantity,
                                                      const std::vector<ParamShard>& shards,
                                                      const std::vector<int>& meshSizes = {},
                                                      const std::vector<int>& meshCoords = {});
// The non-finite values of one step, in the order they arise: the record's
// non-finite loss, ce, aux, the first non-finite gradient shard, the grad
// norm, the first non-finite parameter shard. Empty when all are finite.
// grads / params may be null (not scanned).
std::vector<ref::NonFiniteValue> scanStep(const StepRecord& record, const std::vector<ParamShard>* grads,
                                          const std::vector<ParamShard>* params,
                                          const std::vector<int>& meshSizes = {},
                                          const std::vector<int>& meshCoords = {});
// Whether the record's loss, ce, aux and grad norm are all finite (the
// distributed trainer's are global: the same on every rank).
bool finiteRecord(const StepRecord& record);

struct FiniteInputs {
  int rank = 0;  // global rank, for messages
  std::vector<int> meshSizes;
  std::vector<int> meshCoords;
  const std::vector<StepRecord>* runSteps = nullptr;                   // required
  const std::vector<ref::NonFiniteValue>* runNonFinite = nullptr;      // run-plan's scan (null: none)
  const std::vector<ParamShard>* finalParams = nullptr;                // null: not scanned
  const std::vector<ref::NonFiniteValue>* referenceNonFinite = nullptr;  // null: not judged
};
FiniteInputs finiteInputsOf(const CheckContext& ctx);
// This rank's failure ("" = every value finite): "rank 1: step 2: loss is
// nan; step 2: gradient of NAME: local index [..] ... is nan; ...". The
// reference's non-finite values are reported by rank 0 only, as
// "reference: step 2: ...".
std::string localFiniteFailure(const FiniteInputs& in);
// Collective over `world`: one verdict on every rank, the first failing
// rank's explanation.
CheckResult checkFinite(comm::Communicator& world, const FiniteInputs& in);

class FiniteCheck : public Check {
 public:
  FiniteCheck()
      : Check({"finite",
               "the loss, ce, aux, grad norm, every gradient and every parameter stay finite (no NaN or Inf) on every "
               "rank at every step, and so does the reference; the first non-finite value is named (step, rank, "
               "tensor, index)",
               CheckStage::kAfterLastStep, 35, "mesh, runSteps, runNonFinite, finalParams, referenceNonFinite",
               "exact: any NaN or Inf fails"}) {}
  CheckResult run(const CheckContext& ctx) const override;
};

}  // namespace moe::checks
