#include "common/pattern.h"

namespace moe {

std::vector<std::string> splitDotted(const std::string& name) {
  std::vector<std::string> out(1);
  for (char c : name) {
    if (c == '.') out.emplace_back();
    else out.back() += c;
  }
  return out;
}

bool dottedPatternMatches(const std::string& pattern, const std::string& name) {
  const auto p = splitDotted(pattern), n = splitDotted(name);
  if (p.size() != n.size()) return false;
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i] != "*" && p[i] != n[i]) return false;
  return true;
}

}  // namespace moe
