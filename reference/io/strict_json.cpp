#include "reference/io/strict_json.h"

#include <set>

#include "common/error.h"

namespace moe::io {

nlohmann::json parseStrictJson(const char* begin, const char* end, const StrictJsonOptions& options) {
  using nlohmann::json;
  std::vector<std::set<std::string>> seenKeys;  // one set per open object
  std::vector<std::string> path;                // the current key of each open object
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > options.maxDepth) {
      options.onTooDeep();
      MOE_ASSERT(false, "StrictJsonOptions::onTooDeep returned instead of throwing");
    }
    switch (event) {
      case json::parse_event_t::object_start:
        seenKeys.emplace_back();
        path.emplace_back();
        break;
      case json::parse_event_t::object_end:
        seenKeys.pop_back();
        path.pop_back();
        break;
      case json::parse_event_t::key: {
        const std::string key = parsed.get<std::string>();
        if (!seenKeys.back().insert(key).second) {
          options.onDuplicate(std::vector<std::string>(path.begin(), path.end() - 1), key);
          MOE_ASSERT(false, "StrictJsonOptions::onDuplicate returned instead of throwing");
        }
        path.back() = key;
        break;
      }
      default:
        break;
    }
    return true;
  };
  return json::parse(begin, end, callback);
}

}  // namespace moe::io
