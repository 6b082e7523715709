#pragma once
// Expert weight layouts: Hugging Face hub per-expert tensors vs our fused
// tensors, and a view that makes any checkpoint look fused.
//
// Hub layout (what save_pretrained writes), per expert e, with the
// family's projection names (HubExpertNames; Qwen3-MoE's shown, Mixtral's
// are w1 / w3 / w2 under model.layers.N.block_sparse_moe):
//   <prefix>.<e>.gate_proj.weight   [I, H]
//   <prefix>.<e>.up_proj.weight     [I, H]
//   <prefix>.<e>.down_proj.weight   [H, I]
// Fused layout (what the reference model and every plan use):
//   <prefix>.gate_up_proj           [E, 2·I, H]  gate rows [0, I), then up rows
//   <prefix>.down_proj              [E, H, I]
// where <prefix> is the experts module, e.g. "model.layers.3.mlp.experts".
//
// Loading paths read through FusedExpertView, so they see fused names and can
// read any slice of a fused tensor whichever layout the file has; for a hub
// file a slice reads only the selected experts' tensors (and only the
// selected rows/columns of those).
#include <ATen/ATen.h>

#include <array>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "reference/io/tensor_source.h"

namespace moe::io {

constexpr const char* kGateUpProj = "gate_up_proj";
constexpr const char* kDownProj = "down_proj";

// "model.layers.<layer>.mlp.experts"
std::string expertsPrefix(int64_t layer);
// "<prefix>.gate_up_proj" and "<prefix>.down_proj"
std::string fusedGateUpName(const std::string& prefix);
std::string fusedDownName(const std::string& prefix);
// "<prefix>.<expert>.<proj>.weight", proj one of gate_proj, up_proj, down_proj.
std::string hubExpertName(const std::string& prefix, int64_t expert,
                          const std::string& proj);

enum class ExpertLayout {
  kNone,   // no expert tensors (a dense model)
  kFused,  // <prefix>.gate_up_proj / <prefix>.down_proj
  kHub,    // <prefix>.<e>.{gate,up,down}_proj.weight
};
const char* layoutName(ExpertLayout layout);

// A family's hub naming of the MoE block (reference/model/family.h holds
// each family's values): the hub block segment `hubBlock` of
// "model.layers.N.<hubBlock>." stands for "mlp" in memory (every tensor of
// the block: router and experts), and the per-expert projections are named
// projs = {gate, up, down}.
struct HubExpertNames {
  std::string hubBlock = "mlp";
  std::array<std::string, 3> projs = {"gate_proj", "up_proj", "down_proj"};
  // GPT-OSS: the fused tensors are the hub layout, transposed:
  // <prefix>.gate_up_proj [E, H, 2·I] (gate and up interleaved on the last
  // dim) and <prefix>.down_proj [E, I, H]; per-expert tensors are refused
  // and toHubLayout passes the fused tensors through.
  bool transposedFused = false;
};

// The layout of `source`'s expert tensors. Throws HarnessError when the
// source mixes both layouts or holds a per-expert tensor we do not know
// (e.g. "<prefix>.0.gate_proj.bias", or another family's projection name).
ExpertLayout detectExpertLayout(const TensorSource& source, const HubExpertNames& hub = {});

struct FusedViewOptions {
  // When >= 0, every experts module must have exactly this many experts
  // (the config's num_experts): more is reported as extra experts.
  int64_t numExperts = -1;
  HubExpertNames hub;
};

// `base` with its expert tensors presented in the fused layout; other tensors
// pass through unchanged. `base` must outlive the view.
// The constructor validates every experts module of either layout and throws
// HarnessError naming the tensor for: a missing expert (indices must be
// 0..E-1), a missing projection, extra experts (FusedViewOptions), shapes
// that do not agree ([I, H], [I, H], [H, I] for every expert; gate_up/down
// consistent in the fused layout), mixed dtypes or mixed layouts.
class FusedExpertView : public TensorSource {
 public:
  explicit FusedExpertView(const TensorSource& base,
                           const FusedViewOptions& options = {});

  ExpertLayout layout() const { return layout_; }

  using TensorSource::readSlice;
  std::string where() const override { return base_.where(); }
  // A fused tensor of the hub layout may span files: where() for those.
  std::string whereOf(const std::string& name) const override;
  std::vector<std::string> names() const override { return names_; }
  bool has(const std::string& name) const override;
  std::vector<int64_t> shape(const std::string& name) const override;
  at::ScalarType scalarType(const std::string& name) const override;
  at::Tensor readSlice(const std::string& name,
                       const std::vector<SliceRange>& ranges) const override;

 private:
  // One experts module stored per expert in `base_`.
  struct HubModule {
    std::string prefix;      // in memory: model.layers.N.mlp.experts
    std::string basePrefix;  // in `base_`: model.layers.N.<hubBlock>.experts
    int64_t numExperts = 0;
    int64_t intermediate = 0;  // I
    int64_t hidden = 0;        // H
    at::ScalarType type = at::kFloat;
  };
  at::Tensor readHubSlice(const HubModule& m, bool gateUp,
                          const std::vector<SliceRange>& ranges) const;

  const TensorSource& base_;
  HubExpertNames hub_;
  ExpertLayout layout_ = ExpertLayout::kNone;
  std::vector<std::string> names_;  // sorted
  // fused name (gate_up or down) -> its hub module
  std::map<std::string, HubModule> hubByFusedName_;
  // in-memory name -> name in `base_`, for tensors of a renamed hub block
  std::map<std::string, std::string> baseName_;
  const std::string& baseName(const std::string& name) const;
};

// Every tensor of `source` with experts in the fused layout, by name.
std::map<std::string, at::Tensor> readAllFused(
    const TensorSource& source, const FusedViewOptions& options = {});

// Converts the fused expert tensors in `tensors` to the hub layout (each
// <prefix>.gate_up_proj needs its <prefix>.down_proj); other tensors are
// passed through. Output order: input order, with each module's experts
// emitted at its gate_up_proj's position as gate, up, down per expert.
// gate_up: [E, 2·I, H]   down: [E, H, I]. Throws HarnessError (prefixed by
// `where`) for a missing partner or inconsistent shapes.
// With a renamed hub block (`hub.hubBlock` != "mlp"), every tensor of
// model.layers.N.mlp. is written under model.layers.N.<hubBlock>.
// Tests and tools write hub-layout files with writeSafetensors(path,
// toHubLayout(tensors)).
std::vector<std::pair<std::string, at::Tensor>> toHubLayout(
    const std::vector<std::pair<std::string, at::Tensor>>& tensors,
    const std::string& where = "toHubLayout", const HubExpertNames& hub = {});

}  // namespace moe::io
