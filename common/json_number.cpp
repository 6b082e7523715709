#include "common/json_number.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

#include "common/error.h"

namespace moe {

std::string nonFiniteName(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  return "";
}

nlohmann::json jsonNumber(double x) {
  if (std::isfinite(x)) return x;
  return nonFiniteName(x);
}

void tagNonFinite(nlohmann::json& j) {
  if (j.is_number_float()) {
    const double x = j.get<double>();
    if (!std::isfinite(x)) j = nonFiniteName(x);
  } else if (j.is_structured()) {
    for (auto& child : j) tagNonFinite(child);
  }
}

std::string dumpJson(const nlohmann::json& j, int indent) {
  nlohmann::json copy = j;
  tagNonFinite(copy);
  return copy.dump(indent);
}

double numberOf(const nlohmann::json& j, const std::string& what) {
  if (j.is_number()) return j.get<double>();
  if (j.is_string()) {
    std::string s = j.get<std::string>();
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
    if (s == "inf" || s == "+inf" || s == "infinity") return std::numeric_limits<double>::infinity();
    if (s == "-inf" || s == "-infinity") return -std::numeric_limits<double>::infinity();
  }
  fail(what, ": expected a number or \"nan\"/\"inf\"/\"-inf\", got ", j.dump());
}

double numberOr(const nlohmann::json& obj, const std::string& key, double fallback) {
  if (!obj.is_object() || !obj.contains(key)) return fallback;
  return numberOf(obj.at(key), key);
}

}  // namespace moe
