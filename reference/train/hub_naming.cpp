#include "reference/train/hub_naming.h"

#include "reference/model/family.h"

namespace moe::ref {

io::HubExpertNames hubExpertNames(const ModelConfig& config) {
  const HubExpertNaming n = familyOf(config).hubExpertNaming();
  io::HubExpertNames names{n.hubBlock, n.projs};
  names.transposedFused = n.transposedFused;
  return names;
}

io::FusedViewOptions fusedViewOptions(const ModelConfig& config) {
  return io::FusedViewOptions{/*numExperts=*/config.numExperts, hubExpertNames(config)};
}

}  // namespace moe::ref
