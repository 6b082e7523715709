#pragma once
// JSON parsing for checkpoint metadata (safetensors headers, sharded
// indexes) that refuses duplicate keys. nlohmann keeps the last of two equal
// keys silently, so a file listing a tensor twice would mean whichever entry
// came last; here every duplicate is reported to the caller, which names it
// in its own terms. Torch-free: the safetensors header parser is fuzzed.
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moe::io {

struct StrictJsonOptions {
  // Deepest nesting accepted (bounds what a hostile file costs).
  int maxDepth = 64;
  // Called when the nesting exceeds maxDepth; must throw.
  std::function<void()> onTooDeep;
  // Called for a key met twice in one object; must throw. enclosing: the
  // keys leading from the root to that object (empty: the root object;
  // arrays on the way add nothing).
  std::function<void(const std::vector<std::string>& enclosing, const std::string& key)> onDuplicate;
};

// Parses [begin, end) as one JSON value. A syntax error is a
// nlohmann::json::exception, left to the caller to name its file.
nlohmann::json parseStrictJson(const char* begin, const char* end, const StrictJsonOptions& options);

}  // namespace moe::io
