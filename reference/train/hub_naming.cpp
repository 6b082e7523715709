#include "reference/train/hub_naming.h"

#include "reference/model/family.h"

namespace moe::ref {

io::HubExpertNames hubExpertNames(const ModelConfig& config) {
  const HubExpertNaming n = familyOf(config).hubExpertNaming();
  return io::HubExpertNames{n.hubBlock, n.projs};
}

io::FusedViewOptions fusedViewOptions(const ModelConfig& config) {
  return io::FusedViewOptions{/*numExperts=*/config.numExperts, hubExpertNames(config)};
}

}  // namespace moe::ref
