// Registry<Check>. How to add a check (check_registry.h says it in full):
// one class deriving from Check with its CheckInfo and run(), ending its file
// with `MOE_REGISTER(Check, MyCheck);`, plus a test that makes it fail.
#include "harness/checks/check_registry.h"

#include <algorithm>

#include "common/error.h"

namespace moe::checks {

std::string stageName(CheckStage stage) {
  switch (stage) {
    case CheckStage::kAfterLoad: return "after loading";
    case CheckStage::kAfterStep1: return "after step 1";
    case CheckStage::kAfterLastStep: return "after the last step";
  }
  MOE_ASSERT(false, "unknown check stage ", static_cast<int>(stage));
  return "";
}

std::vector<const Check*> checksInOrder() {
  auto all = CheckRegistry::instance().all();  // sorted by name
  std::stable_sort(all.begin(), all.end(), [](const Check* a, const Check* b) { return a->order() < b->order(); });
  return all;
}

std::vector<CheckResult> runChecks(const std::vector<std::string>& names, const CheckContext& ctx) {
  const CheckRegistry& reg = CheckRegistry::instance();
  std::vector<const Check*> selected;
  for (const auto& n : names) selected.push_back(&reg.get(n));
  std::vector<CheckResult> results;
  for (const Check* c : selected) results.push_back(c->run(ctx));
  return results;
}

}  // namespace moe::checks
