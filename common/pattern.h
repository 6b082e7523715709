#pragma once
// Dotted names and patterns ("model.layers.*.mlp.gate"), shared by plans and
// checks: `*` matches exactly one segment, anything else matches itself.
#include <string>
#include <vector>

namespace moe {

// "a.b.c" -> {"a", "b", "c"}; "" -> {""}.
std::vector<std::string> splitDotted(const std::string& name);
// True when `pattern` matches the whole of `name` (equal segment counts).
bool dottedPatternMatches(const std::string& pattern, const std::string& name);

}  // namespace moe
