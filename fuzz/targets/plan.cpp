#include <string>

#include "common/error.h"
#include "fuzz/targets.h"
#include "harness/mesh/device_mesh.h"
#include "reference/model/config.h"
#include "reference/plan/plan.h"

namespace moe::fuzz {

void plan(const uint8_t* data, size_t size) {
  plan::Plan p;
  try {
    p = plan::Plan::fromFile(writeTempFile("plan.json", data, size));
  } catch (const HarnessError&) {
    return;
  }
  static const ref::ModelConfig config = ref::tinyTestConfig();
  static const std::vector<mesh::MeshShape> meshes = {
      mesh::MeshShape({{"ep", 2}}, 2),
      mesh::MeshShape({{"ep", 2}, {"tp", 2}}, 4),
      mesh::MeshShape({{"dp", 2}, {"tp", 3}}, 6),
  };
  for (const auto& m : meshes) {
    try {
      const plan::AppliedPlan applied = plan::applyPlan(p, config, m);
      for (const auto& param : applied.params) (void)param.primaryStyle();
    } catch (const HarnessError&) {
    }
  }
}

}  // namespace moe::fuzz
