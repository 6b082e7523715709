#include "harness/checks/dispatch_volume.h"

#include "common/error.h"

namespace moe::checks {

DispatchExpectation expectedDispatch(const plan::AppliedPlan& plan, const mesh::MeshShape& mesh,
                                     const ref::ModelConfig& config, int64_t globalTokens) {
  // What the styles declared: sequence parallelism splits the tokens over
  // tp; a token-dispatching router sends every routed row once.
  const bool sp = !plan.dimsDeclaring([](const plan::ModuleComm& c) { return c.sequenceParallel; }).empty();
  const bool ep = !plan.dimsDeclaring([](const plan::ModuleComm& c) { return c.dispatchTokens; }).empty();
  DispatchExpectation e;
  e.tpCopies = sp ? 1 : mesh.size("tp");
  e.rows = ep && mesh.size("ep") > 1 ? globalTokens * config.numExpertsPerTok * config.numMoeLayers() * e.tpCopies : 0;
  return e;
}

CheckResult describeDispatchVolume(int64_t measured, const DispatchExpectation& e) {
  CheckResult r;
  r.check = "communication";
  const int64_t expected = e.rows;
  r.passed = measured == expected;
  r.measured = {{"dispatched_rows", measured}, {"expected_rows", expected}};
  r.explanation = r.passed ? moe::str("dispatch volume ", measured, " rows = tokens x top-k x MoE layers")
                           : moe::str("dispatch volume ", measured, " rows, expected ", expected,
                                      " (tokens x top-k x MoE layers", e.tpCopies > 1 ? " x tp" : "", "): ",
                                      measured < expected
                                          ? moe::str(expected - measured, " routed rows were never dispatched")
                                          : moe::str(measured - expected, " rows more than were routed"));
  return r;
}

CheckResult checkDispatchVolume(comm::Communicator& world, int64_t sentRows, const DispatchExpectation& expected) {
  // On the world's device (the run's lane); read back on the host.
  at::Tensor total = at::full({1}, sentRows, at::TensorOptions(at::kLong).device(world.device()));
  world.allReduce(total);
  return describeDispatchVolume(total.cpu().item<int64_t>(), expected);
}

}  // namespace moe::checks
