#pragma once
// Non-finite numbers in the JSON the harness writes and reads.
//
// JSON has no NaN or infinity, and nlohmann::json silently dumps a
// non-finite double as `null`; a reader's get<double>() then throws
// "type must be number, but is null". The project's convention
// (docs/errors.md, "Non-finite numbers in JSON"): a number field whose value
// is not finite holds one of the strings "nan", "inf" or "-inf" instead, so
// the field says why it is not a number. Writers tag before dumping
// (dumpJson / tagNonFinite); readers accept the three strings wherever they
// read a number (numberOf / numberOr).
#include <nlohmann/json.hpp>
#include <string>

namespace moe {

// "nan", "inf" or "-inf" for a non-finite x; "" for a finite one.
std::string nonFiniteName(double x);
// x as JSON: a number when finite, else its nonFiniteName string.
nlohmann::json jsonNumber(double x);
// Replaces, recursively, every non-finite floating-point number in `j` by its
// nonFiniteName string.
void tagNonFinite(nlohmann::json& j);
// j.dump(indent) after tagNonFinite on a copy: never writes a null for a
// non-finite number.
std::string dumpJson(const nlohmann::json& j, int indent = -1);
// The number `j` holds: a JSON number, or "nan" / "inf" / "-inf" (also
// "+inf", "infinity", "-infinity", any case). Anything else (null included)
// throws HarnessError "<what>: expected a number or \"nan\"/\"inf\"/\"-inf\", got ...".
double numberOf(const nlohmann::json& j, const std::string& what);
// obj[key] read with numberOf, or `fallback` when obj is not an object or
// has no `key`.
double numberOr(const nlohmann::json& obj, const std::string& key, double fallback);

}  // namespace moe
