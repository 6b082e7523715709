#include "harness/suite/json_schema.h"

#include <cmath>
#include <regex>
#include <set>

#include "common/error.h"

namespace moe::cases {
namespace {

const std::set<std::string> kKnown = {
    "type", "enum", "properties", "required", "additionalProperties", "propertyNames",
    "minProperties", "items", "minItems", "maxItems", "minimum", "exclusiveMinimum", "pattern",
    "anyOf", "$ref", "definitions", "$defs", "$comment", "title", "description", "$schema"};

std::string typeOf(const nlohmann::json& v) {
  switch (v.type()) {
    case nlohmann::json::value_t::null: return "null";
    case nlohmann::json::value_t::boolean: return "boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return "integer";
    case nlohmann::json::value_t::number_float: return "number";
    case nlohmann::json::value_t::string: return "string";
    case nlohmann::json::value_t::array: return "array";
    case nlohmann::json::value_t::object: return "object";
    default: return "value";
  }
}

bool hasType(const nlohmann::json& v, const std::string& t) {
  const std::string actual = typeOf(v);
  if (t == actual) return true;
  if (t == "number") return v.is_number();
  // 2.0 is an integer in JSON Schema.
  // No cast to an integer type: 1e30 or 1e400 (inf) overflowed it, undefined
  // behaviour found by the case_file fuzz target.
  if (t == "integer" && v.is_number_float()) return std::isfinite(v.get<double>()) && std::trunc(v.get<double>()) == v.get<double>();
  return false;
}

// Short text of a value for messages (long values are cut).
std::string brief(const nlohmann::json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

std::string escapePointer(const std::string& key) {
  std::string out;
  for (char c : key) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out += c;
  }
  return out;
}

}  // namespace

std::string SchemaViolation::describe() const {
  return (pointer.empty() ? std::string("(document)") : pointer) + ": " + message;
}

JsonSchema::JsonSchema(nlohmann::json schema) : root_(std::move(schema)) { checkKeywords(root_, "#"); }

void JsonSchema::checkKeywords(const nlohmann::json& s, const std::string& where) const {
  if (s.is_boolean()) return;
  if (!s.is_object()) fail("schema ", where, ": a schema must be an object or a boolean");
  for (const auto& [k, v] : s.items()) {
    if (!kKnown.count(k)) fail("schema ", where, ": unsupported keyword '", k, "'");
    if (k == "properties" || k == "definitions" || k == "$defs")
      for (const auto& [name, sub] : v.items()) checkKeywords(sub, where + "/" + k + "/" + name);
    else if (k == "additionalProperties" || k == "propertyNames" || k == "items")
      checkKeywords(v, where + "/" + k);
    else if (k == "anyOf")
      for (size_t i = 0; i < v.size(); ++i) checkKeywords(v[i], moe::str(where, "/anyOf/", i));
    else if (k == "$ref")
      resolve(v.get<std::string>());
  }
}

const nlohmann::json& JsonSchema::resolve(const std::string& ref) const {
  for (const char* prefix : {"#/definitions/", "#/$defs/"}) {
    const std::string p = prefix;
    if (ref.rfind(p, 0) == 0) {
      const std::string section = p.substr(2, p.size() - 3);
      const std::string name = ref.substr(p.size());
      if (root_.contains(section) && root_[section].contains(name)) return root_[section][name];
    }
  }
  fail("schema: $ref '", ref, "' does not name a definition");
}

std::vector<SchemaViolation> JsonSchema::validate(const nlohmann::json& doc) const {
  std::vector<SchemaViolation> out;
  check(root_, doc, "", out);
  return out;
}

void JsonSchema::check(const nlohmann::json& s, const nlohmann::json& v, const std::string& ptr,
                       std::vector<SchemaViolation>& out) const {
  if (s.is_boolean()) {
    if (!s.get<bool>()) out.push_back({ptr, "no value is allowed here"});
    return;
  }
  auto add = [&](const std::string& msg) { out.push_back({ptr, msg}); };
  if (s.contains("$ref")) check(resolve(s["$ref"].get<std::string>()), v, ptr, out);
  if (s.contains("type")) {
    std::vector<std::string> types;
    if (s["type"].is_array()) for (const auto& t : s["type"]) types.push_back(t.get<std::string>());
    else types.push_back(s["type"].get<std::string>());
    bool ok = false;
    for (const auto& t : types) ok |= hasType(v, t);
    if (!ok) {
      std::string want;
      for (size_t i = 0; i < types.size(); ++i) want += (i ? " or " : "") + types[i];
      add(moe::str("expected ", want, ", got ", typeOf(v), " ", brief(v)));
      return;  // the other keywords would only repeat the problem
    }
  }
  if (s.contains("enum")) {
    bool found = false;
    for (const auto& e : s["enum"]) found |= (e == v);
    if (!found) {
      std::string allowed;
      for (const auto& e : s["enum"]) allowed += (allowed.empty() ? "" : ", ") + e.dump();
      add(moe::str(brief(v), " is not one of ", allowed));
    }
  }
  if (v.is_number()) {
    const double x = v.get<double>();
    if (s.contains("minimum") && x < s["minimum"].get<double>())
      add(moe::str(brief(v), " is below the minimum ", s["minimum"].dump()));
    if (s.contains("exclusiveMinimum") && x <= s["exclusiveMinimum"].get<double>())
      add(moe::str(brief(v), " must be greater than ", s["exclusiveMinimum"].dump()));
  }
  if (v.is_string() && s.contains("pattern")) {
    const std::string pat = s["pattern"].get<std::string>();
    if (!std::regex_search(v.get<std::string>(), std::regex(pat)))
      add(moe::str(brief(v), " does not match the pattern ", pat));
  }
  if (v.is_array()) {
    if (s.contains("minItems") && v.size() < s["minItems"].get<size_t>())
      add(moe::str("has ", v.size(), " items, needs at least ", s["minItems"].dump()));
    if (s.contains("maxItems") && v.size() > s["maxItems"].get<size_t>())
      add(moe::str("has ", v.size(), " items, at most ", s["maxItems"].dump(), " allowed"));
    if (s.contains("items"))
      for (size_t i = 0; i < v.size(); ++i) check(s["items"], v[i], moe::str(ptr, "/", i), out);
  }
  if (v.is_object()) {
    if (s.contains("minProperties") && v.size() < s["minProperties"].get<size_t>())
      add(moe::str("has ", v.size(), " properties, needs at least ", s["minProperties"].dump()));
    if (s.contains("required"))
      for (const auto& r : s["required"])
        if (!v.contains(r.get<std::string>())) add(moe::str("missing required property '", r.get<std::string>(), "'"));
    for (const auto& [k, sub] : v.items()) {
      const std::string child = ptr + "/" + escapePointer(k);
      if (s.contains("propertyNames")) {
        std::vector<SchemaViolation> nameErrs;
        check(s["propertyNames"], nlohmann::json(k), child, nameErrs);
        for (auto& e : nameErrs) out.push_back({child, "property name " + e.message});
      }
      if (s.contains("properties") && s["properties"].contains(k)) {
        check(s["properties"][k], sub, child, out);
      } else if (s.contains("additionalProperties")) {
        const auto& ap = s["additionalProperties"];
        if (ap.is_boolean() && !ap.get<bool>()) {
          std::string known;
          if (s.contains("properties"))
            for (const auto& [name, unused] : s["properties"].items()) known += (known.empty() ? "" : ", ") + name;
          out.push_back({child, moe::str("unknown property '", k, "'", known.empty() ? "" : " (known: " + known + ")")});
        } else {
          check(ap, sub, child, out);
        }
      }
    }
  }
  if (s.contains("anyOf")) {
    std::vector<std::string> why;
    bool any = false;
    for (const auto& alt : s["anyOf"]) {
      std::vector<SchemaViolation> errs;
      check(alt, v, ptr, errs);
      if (errs.empty()) {
        any = true;
        break;
      }
      why.push_back(errs.front().describe());
    }
    if (!any) {
      std::string msg = "matches none of the allowed forms:";
      for (const auto& w : why) msg += " [" + w + "]";
      add(msg);
    }
  }
}

}  // namespace moe::cases
