#pragma once
// A small JSON Schema validator: the subset cases/schema.json uses.
//
// Supported keywords: type (a name or a list; "integer" accepts integral
// numbers), enum, properties, required, additionalProperties (bool or a
// schema), propertyNames, minProperties, items (one schema), minItems,
// maxItems, minimum, exclusiveMinimum, pattern (ECMAScript regex, searched),
// anyOf, $ref ("#/definitions/NAME" or "#/$defs/NAME"). Annotation keywords
// ($comment, title, description, $schema) are ignored; any other keyword is
// an error in the schema itself (so a schema never silently checks less than
// it says).
//
// Contract: validate() returns every violation found, each naming the JSON
// pointer of the offending value ("/mesh/ep") and the problem; an empty
// list means the document conforms.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moe::cases {

struct SchemaViolation {
  std::string pointer;  // "" = the document root
  std::string message;  // "expected integer, got string \"2\""
  std::string describe() const;  // "/mesh/ep: expected integer, got string \"2\""
};

class JsonSchema {
 public:
  // Throws HarnessError when `schema` uses an unsupported keyword.
  explicit JsonSchema(nlohmann::json schema);
  std::vector<SchemaViolation> validate(const nlohmann::json& doc) const;

 private:
  void check(const nlohmann::json& schema, const nlohmann::json& value, const std::string& ptr,
             std::vector<SchemaViolation>& out) const;
  const nlohmann::json& resolve(const std::string& ref) const;
  void checkKeywords(const nlohmann::json& schema, const std::string& where) const;
  nlohmann::json root_;
};

// The case schema (cases/schema.json, embedded at build time).
const JsonSchema& caseSchema();
const std::string& caseSchemaText();

}  // namespace moe::cases
