// How to add a plan style:
//  1. Write reference/plan/styles/<name>.cpp: a class deriving from PlanStyle
//     (style.h) and a factory `std::unique_ptr<PlanStyle> make<Name>Style()`
//     in namespace moe::plan; add the file to reference/plan/CMakeLists.txt.
//  2. Add one X(make<Name>Style) line to MOE_PLAN_STYLES below.
//  3. Add its row to reference/plan/STYLES.md and a placement test in
//     reference/plan/tests/style_test.cpp.
#include "reference/plan/style_registry.h"

#include <algorithm>
#include <map>

#include "harness/common/error.h"

#define MOE_PLAN_STYLES(X)           \
  X(makeColwiseStyle)                \
  X(makeRowwiseStyle)                \
  X(makePackedColwiseStyle)          \
  X(makeSequenceParallelStyle)       \
  X(makeReplicateStyle)              \
  X(makeGroupedGemmStyle)            \
  X(makeEpRouterStyle)               \
  X(makeMoeExpertsAllreduceStyle)    \
  X(makeMoeTpGateUpColwiseStyle)     \
  X(makeMoeTpDownRowwiseStyle)

namespace moe::plan {

#define MOE_DECLARE_STYLE(factory) std::unique_ptr<PlanStyle> factory();
MOE_PLAN_STYLES(MOE_DECLARE_STYLE)
#undef MOE_DECLARE_STYLE

namespace {

const std::map<std::string, std::unique_ptr<PlanStyle>>& registry() {
  static const auto* styles = [] {
    auto* m = new std::map<std::string, std::unique_ptr<PlanStyle>>();
#define MOE_REGISTER_STYLE(factory)                                          \
  {                                                                          \
    auto s = factory();                                                      \
    const std::string n = s->name();                                         \
    MOE_ASSERT(!m->count(n), "plan style registered twice: ", n);            \
    m->emplace(n, std::move(s));                                             \
  }
    MOE_PLAN_STYLES(MOE_REGISTER_STYLE)
#undef MOE_REGISTER_STYLE
    return m;
  }();
  return *styles;
}

}  // namespace

const PlanStyle& findStyle(const std::string& name) {
  auto it = registry().find(name);
  if (it == registry().end()) {
    std::string known;
    for (const auto& n : knownStyles()) known += (known.empty() ? "" : ", ") + n;
    fail("unknown plan style \"", name, "\" (known styles: ", known, ")");
  }
  return *it->second;
}

bool hasStyle(const std::string& name) { return registry().count(name) > 0; }

std::vector<std::string> knownStyles() {
  std::vector<std::string> out;
  for (const auto& [n, s] : registry()) out.push_back(n);
  return out;
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
