#pragma once
// The registry of plan styles by name (see style_registry.cpp for how to add
// one). Styles are stateless singletons.
#include <memory>
#include <string>
#include <vector>

#include "reference/plan/style.h"

namespace moe::plan {

// The style called `name`, or a HarnessError listing the known names.
const PlanStyle& findStyle(const std::string& name);
bool hasStyle(const std::string& name);
// Known style names, sorted.
std::vector<std::string> knownStyles();

}  // namespace moe::plan
