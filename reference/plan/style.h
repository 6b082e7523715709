#pragma once
// PlanStyle: one named way of distributing a parameter or a module, the
// plug-in unit of plans (see plan.h for how plans apply styles, docs/styles.md for
// the table of styles, style_registry.cpp for how to add one).
//
// A style acts on ONE mesh dim (meshDim(): "tp", "ep", ...). It declares
// everything the distributed model does for it, so adding a style is one
// file (style_registry.cpp says how):
//  - pass 1, placeParameter(): the placement this style gives a parameter on
//    its mesh dim (the other mesh dims are decided by other entries). It
//    throws HarnessError naming the parameter for a tensor of the wrong rank
//    or a dim not divisible where the style needs it. Module-only styles
//    (placesParameters() == false) never get this call.
//    shardsParameters(): whether that placement is meant to split the
//    parameter; the placement check holds the style to it (a sharding style
//    whose parameter ends up whole fails, a non-sharding style's parameter
//    must be replicated and identical).
//  - pass 2, moduleComm(): the communication this style declares for its
//    module on its mesh dim (ModuleComm below). The distributed model
//    (reference/parallel) executes exactly what the styles declare, on the
//    communicator of the declared mesh dim; it never decides communication
//    from a module's name.
#include <cstdint>
#include <string>
#include <vector>

#include "common/registry.h"
#include "harness/mesh/device_mesh.h"
#include "reference/model/config.h"
#include "reference/placement/placement.h"

namespace moe::plan {

// The communication a style declares for a module, on the style's mesh dim
// (Megatron's f/g operators and PyTorch's ParallelStyle input/output
// layouts, reduced to what the model computes). Several styles may declare
// for one module (on one or several dims): their declarations are merged.
struct ModuleComm {
  // The module's input enters a tensor-parallel region: forward identity,
  // backward sum of the input gradient over the dim (colwise: f). Under
  // sequence parallelism: an all-gather along the sequence instead (and a
  // reduce-scatter of its gradient).
  bool enterRegion = false;
  // The module's output is Partial(sum) and leaves the region: forward sum
  // over the dim, backward identity (rowwise: g). Under sequence
  // parallelism: a reduce-scatter along the sequence instead.
  bool exitRegion = false;
  // Activations outside the regions are sharded along the sequence over the
  // dim, so a parameter used there sees only its rank's positions and its
  // gradient is a partial sum over the dim (sequence_parallel).
  bool sequenceParallel = false;
  // The module routes tokens: each token's top-k rows go to the ranks owning
  // the chosen experts with all_to_all over the dim, and come back to be
  // combined (ep_router).
  bool dispatchTokens = false;
  // The module computes only the experts its rank holds on the dim; global
  // expert ids are offset by the rank's first expert (grouped_gemm).
  bool localExperts = false;
  // The module's expert outputs are Partial(sum) over the dim and summed
  // (moe_experts_allreduce).
  bool sumExpertOutputs = false;

  ModuleComm& operator|=(const ModuleComm& o);
  bool any() const;
  bool operator==(const ModuleComm& o) const;
  bool operator!=(const ModuleComm& o) const { return !(*this == o); }
  std::string describe() const;  // "enter_region+exit_region", "" for none
  // A declaration of one thing: ModuleComm::with(&ModuleComm::enterRegion).
  static ModuleComm with(bool ModuleComm::*flag) {
    ModuleComm c;
    c.*flag = true;
    return c;
  }
};

// The parameter pass 1 is placing.
struct ParamTarget {
  std::string name;                  // Hugging Face name
  std::vector<int64_t> globalShape;  // full shape
  bool isExpert = false;             // fused expert tensor [E, ...]
};

struct StyleContext {
  const ref::ModelConfig& config;
  const mesh::MeshShape& mesh;
  int meshDimSize = 1;  // size of the style's mesh dim in `mesh`
};

class PlanStyle;

// What a style is: its name, its mesh dim, what it declares and how it
// places a parameter. Most styles are just this data (a registration line
// `MOE_REGISTER(PlanStyle, PlanStyle, StyleTraits{...});`); a class deriving
// from PlanStyle may override placeParameter() / moduleComm() instead.
struct StyleTraits {
  std::string name;
  std::string meshDim;             // "tp" | "ep"
  ModuleComm comm;                 // declared for its module (pass 2)
  bool placesParameters = true;    // false: a module-only style
  bool shardsParameters = false;   // its placement is meant to split the parameter
  // Pass 1 (see the contract above); nullptr: Replicate().
  ref::Placement (*place)(const PlanStyle& self, const ParamTarget& p, const StyleContext& ctx) = nullptr;
};

class PlanStyle {
 public:
  static constexpr const char* kPluginKind = "plan style";  // common/registry.h
  explicit PlanStyle(StyleTraits traits) : traits_(std::move(traits)) {}
  virtual ~PlanStyle() = default;
  const std::string& name() const { return traits_.name; }
  const std::string& meshDim() const { return traits_.meshDim; }
  bool placesParameters() const { return traits_.placesParameters; }
  // Whether placeParameter() is meant to split the parameter (see above).
  bool shardsParameters() const { return traits_.shardsParameters; }
  // Pass 1: the placement on meshDim() (see the contract above).
  virtual ref::Placement placeParameter(const ParamTarget& p, const StyleContext& ctx) const {
    return traits_.place ? traits_.place(*this, p, ctx) : ref::Placement::replicate();
  }
  // Pass 2: the communication declared for `module` (the module the pattern
  // named, or the parameter's parent module when the pattern named a
  // parameter) on meshDim().
  virtual ModuleComm moduleComm(const std::string& module) const { return traits_.comm; }

 private:
  StyleTraits traits_;
};

// Helpers for styles: throw HarnessError "style S: parameter P: ..." unless
// the tensor has `ndim` dims / dim `dim` (may be negative) of length divisible
// by `divisor` (`what` names the quantity, e.g. "experts").
void requireRank(const PlanStyle& s, const ParamTarget& p, int64_t ndim);
void requireDivisible(const PlanStyle& s, const ParamTarget& p, int64_t value, int64_t divisor,
                      const std::string& what);

}  // namespace moe::plan
