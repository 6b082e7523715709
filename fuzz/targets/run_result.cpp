#include <string>

#include "common/error.h"
#include "fuzz/targets.h"
#include "harness/conformance/run_result.h"

namespace moe::fuzz {

void runResult(const uint8_t* data, size_t size) {
  // As the readers take the document: malformed JSON is reported by them
  // (runner.cpp: "unreadable result"), so only a document that parses goes on.
  const nlohmann::json doc = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return;
  conformance::RunResult r;
  try {
    r = conformance::RunResult::fromJson(doc);
  } catch (const HarnessError&) {
    return;
  }
  // An accepted result round-trips through its JSON form.
  const nlohmann::json j = r.toJson();
  const nlohmann::json again = conformance::RunResult::fromJson(j).toJson();
  MOE_ASSERT(again == j, "a run result does not round-trip: ", j.dump(), " vs ", again.dump());
  for (const auto& c : r.checks) MOE_ASSERT(r.check(c.check) != nullptr, c.check);
}

}  // namespace moe::fuzz
