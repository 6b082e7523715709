#include "common/gpu_requirement.h"

#include <cstdlib>

namespace moe {

bool gpuRequired() {
  const char* v = std::getenv("MOE_HARNESS_REQUIRE_GPU");
  return v != nullptr && *v != '\0' && std::string(v) != "0";
}

int gpuUnavailableExitCode() { return gpuRequired() ? 1 : 77; }

std::string gpuUnavailableMessage(const std::string& reason) {
  return gpuRequired() ? "FAILED (MOE_HARNESS_REQUIRE_GPU=1): " + reason : "SKIPPED: " + reason;
}

}  // namespace moe
