#pragma once
// The registry of checks by name, so the CLI can list them and cases can
// select them. See check_registry.cpp for how to add one.
#include <memory>
#include <string>
#include <vector>

#include "harness/checks/check_context.h"

namespace moe::checks {

class CheckRegistry {
 public:
  // The built-in checks, in registration order.
  static const CheckRegistry& instance();

  // nullptr when unknown.
  const Check* find(const std::string& name) const;
  // Throws HarnessError "unknown check 'x' (known: placement, ...)".
  const Check& get(const std::string& name) const;
  std::vector<const Check*> all() const;
  std::vector<std::string> names() const;

  template <typename T>
  void add() {
    add(std::make_unique<T>());
  }
  void add(std::unique_ptr<Check> check);  // throws HarnessError on a duplicate name

 private:
  std::vector<std::unique_ptr<Check>> checks_;
};

// Runs the named checks in order (each collective where it says so; every
// rank must pass the same names). An unknown name throws before anything runs.
std::vector<CheckResult> runChecks(const std::vector<std::string>& names, const CheckContext& ctx);

}  // namespace moe::checks
