// How to add a plan style (the project's one plug-in idiom, common/registry.h):
//  1. Write reference/plan/styles/<name>.cpp: a class deriving from PlanStyle
//     (style.h) that declares its mesh dim, the placement it gives a
//     parameter and the communication it adds to its module.
//  2. End the file with one line: MOE_REGISTER(PlanStyle, MyStyle);
// The styles/ folder is globbed by CMake: nothing else to touch. A test may
// register a style of its own the same way, in its own file.
#include "reference/plan/style_registry.h"

#include "common/error.h"

namespace moe::plan {

namespace {
const Registry<PlanStyle>& registry() { return Registry<PlanStyle>::instance(); }
}  // namespace

const PlanStyle& findStyle(const std::string& name) {
  const PlanStyle* s = registry().find(name);
  if (!s) fail("unknown plan style \"", name, "\" (known styles: ", registry().joinedNames(), ")");
  return *s;
}

bool hasStyle(const std::string& name) { return registry().has(name); }

std::vector<std::string> knownStyles() {
  return registry().names();
}

ModuleComm& ModuleComm::operator|=(const ModuleComm& o) {
  enterRegion |= o.enterRegion;
  exitRegion |= o.exitRegion;
  sequenceParallel |= o.sequenceParallel;
  dispatchTokens |= o.dispatchTokens;
  localExperts |= o.localExperts;
  sumExpertOutputs |= o.sumExpertOutputs;
  return *this;
}

bool ModuleComm::any() const { return *this != ModuleComm{}; }

bool ModuleComm::operator==(const ModuleComm& o) const {
  return enterRegion == o.enterRegion && exitRegion == o.exitRegion && sequenceParallel == o.sequenceParallel &&
         dispatchTokens == o.dispatchTokens && localExperts == o.localExperts &&
         sumExpertOutputs == o.sumExpertOutputs;
}

std::string ModuleComm::describe() const {
  std::string s;
  auto add = [&](bool on, const char* n) {
    if (on) s += (s.empty() ? "" : "+") + std::string(n);
  };
  add(enterRegion, "enter_region");
  add(exitRegion, "exit_region");
  add(sequenceParallel, "sequence_parallel");
  add(dispatchTokens, "dispatch_tokens");
  add(localExperts, "local_experts");
  add(sumExpertOutputs, "sum_expert_outputs");
  return s;
}

void requireRank(const PlanStyle& s, const ParamTarget& p, int64_t ndim) {
  if (static_cast<int64_t>(p.globalShape.size()) != ndim)
    fail("style ", s.name(), ": parameter ", p.name, " has ", p.globalShape.size(),
         " dims (shape ", torch::IntArrayRef(p.globalShape), "), the style needs ", ndim);
}

void requireDivisible(const PlanStyle& s, const ParamTarget& p, int64_t value, int64_t divisor,
                      const std::string& what) {
  if (divisor <= 0 || value % divisor != 0)
    fail("style ", s.name(), ": parameter ", p.name, ": ", what, " = ", value,
         " is not divisible by ", divisor);
}

}  // namespace moe::plan
