// How to add a check:
//  1. Write one class deriving from moe::checks::Check (check_context.h) in
//     harness/checks/<name>_check.{h,cpp}: name(), a one-line description()
//     and run(const CheckContext&), which reads the inputs it needs from the
//     context (require() names a missing one) and returns one verdict that
//     every rank agrees on (check_common.h: agreeVerdict).
//  2. Register it with ONE line in builtinChecks() below:
//       r.add<MyCheck>();
//  3. Add the .cpp to moe_checks in CMakeLists.txt, and a test that passes on
//     correct input and fails on a planted wrong one.
#include "harness/checks/check_registry.h"

#include "harness/checks/comm_check.h"
#include "harness/checks/expert_check.h"
#include "harness/checks/parity_check.h"
#include "harness/checks/placement_check.h"
#include "common/error.h"

namespace moe::checks {

namespace {
CheckRegistry builtinChecks() {
  CheckRegistry r;
  r.add<PlacementCheck>();
  r.add<ExpertUniquenessCheck>();
  r.add<ParityCheck>();
  r.add<CommunicationCheck>();
  return r;
}
}  // namespace

const CheckRegistry& CheckRegistry::instance() {
  static const CheckRegistry registry = builtinChecks();
  return registry;
}

void CheckRegistry::add(std::unique_ptr<Check> check) {
  if (find(check->name())) moe::fail("check '", check->name(), "' is registered twice");
  checks_.push_back(std::move(check));
}

const Check* CheckRegistry::find(const std::string& name) const {
  for (const auto& c : checks_)
    if (c->name() == name) return c.get();
  return nullptr;
}

const Check& CheckRegistry::get(const std::string& name) const {
  if (const Check* c = find(name)) return *c;
  std::string known;
  for (const auto& n : names()) known += (known.empty() ? "" : ", ") + n;
  moe::fail("unknown check '", name, "' (known: ", known, ")");
}

std::vector<const Check*> CheckRegistry::all() const {
  std::vector<const Check*> out;
  for (const auto& c : checks_) out.push_back(c.get());
  return out;
}

std::vector<std::string> CheckRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& c : checks_) out.push_back(c->name());
  return out;
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
