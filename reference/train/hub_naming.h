#pragma once
// The bridge between a model family's hub naming (reference/model/family.h)
// and the checkpoint reader (reference/io/expert_layout.h), which knows no
// model: every reader of a checkpoint of `config` views it through
// io::FusedExpertView with these options, so a Mixtral checkpoint's
// block_sparse_moe.experts.N.w1/w3/w2 and a Qwen3-MoE checkpoint's
// mlp.experts.N.gate_proj/up_proj/down_proj both load as the fused
// in-memory tensors (and one family's names in the other's checkpoint are
// refused by name).
#include "reference/io/expert_layout.h"
#include "reference/model/config.h"

namespace moe::ref {

io::HubExpertNames hubExpertNames(const ModelConfig& config);
// numExperts = config.numExperts, hub = hubExpertNames(config)
io::FusedViewOptions fusedViewOptions(const ModelConfig& config);

}  // namespace moe::ref
