#pragma once
// PlanStyle: one named way of distributing a parameter or a module, the
// plug-in unit of plans (see plan.h for how plans apply styles, STYLES.md for
// the table of styles, style_registry.cpp for how to add one).
//
// A style acts on ONE mesh dim (meshDim(): "tp" or "ep"). Its two hooks match
// the two passes of a plan:
//  - pass 1, placeParameter(): the placement this style gives a parameter on
//    its mesh dim (the other mesh dims are decided by other entries). It
//    throws HarnessError naming the parameter for a tensor of the wrong rank
//    or a dim not divisible where the style needs it. Module-only styles
//    (placesParameters() == false) never get this call.
//  - pass 2, moduleComm(): the communication flags (CommFlag bits) this style
//    adds to a module; the distributed forward (reference/parallel) reads them.
#include <cstdint>
#include <string>
#include <vector>

#include "common/registry.h"
#include "harness/mesh/device_mesh.h"
#include "reference/model/config.h"
#include "reference/placement/placement.h"

namespace moe::plan {

// Communication a module style asks the distributed forward for.
enum CommFlag : uint32_t {
  kCommNone = 0,
  kCopyInputTp = 1u << 0,        // identity forward, all-reduce(tp) of the input grad
  kAllReduceOutputTp = 1u << 1,  // Partial output all-reduced over tp (identity backward)
  kSequenceParallel = 1u << 2,   // activations sharded on the sequence over tp
  kEpDispatch = 1u << 3,         // router outputs -> all_to_all dispatch over ep
  kExpertsAllReduceTp = 1u << 4, // experts' partial outputs all-reduced over tp
  kLocalExperts = 1u << 5,       // experts hold the ep-local slice (local count updated)
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

class PlanStyle {
 public:
  static constexpr const char* kPluginKind = "plan style";  // common/registry.h
  virtual ~PlanStyle() = default;
  virtual std::string name() const = 0;
  virtual std::string meshDim() const = 0;  // "tp" | "ep"
  virtual bool placesParameters() const { return true; }
  // Pass 1: the placement on meshDim() (see the contract above).
  virtual ref::Placement placeParameter(const ParamTarget& p, const StyleContext& ctx) const {
    return ref::Placement::replicate();
  }
  // Pass 2: CommFlag bits for `module` (the module the pattern named, or the
  // parameter's parent module when the pattern named a parameter).
  virtual uint32_t moduleComm(const std::string& module) const { return kCommNone; }
};

// Helpers for styles: throw HarnessError "style S: parameter P: ..." unless
// the tensor has `ndim` dims / dim `dim` (may be negative) of length divisible
// by `divisor` (`what` names the quantity, e.g. "experts").
void requireRank(const PlanStyle& s, const ParamTarget& p, int64_t ndim);
void requireDivisible(const PlanStyle& s, const ParamTarget& p, int64_t value, int64_t divisor,
                      const std::string& what);

}  // namespace moe::plan
