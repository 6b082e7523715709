#include <string>

#include "common/error.h"
#include "fuzz/targets.h"
#include "reference/model/config.h"

namespace moe::fuzz {

void modelConfig(const uint8_t* data, size_t size) {
  ref::ModelConfig c;
  try {
    c = ref::ModelConfig::fromFile(writeTempFile("config.json", data, size));
  } catch (const HarnessError&) {
    return;
  }
  // An accepted config round-trips through its JSON form.
  const nlohmann::json j = c.toJson();
  const ref::ModelConfig again = ref::ModelConfig::fromJson(j);
  MOE_ASSERT(again.toJson() == j, "a config does not round-trip: ", j.dump(), " vs ", again.toJson().dump());
  (void)c.numMoeLayers();
}

}  // namespace moe::fuzz
