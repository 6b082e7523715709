#pragma once
// Plans: an ordered list of (name pattern -> style name), as Hugging Face's
// tp_plan / ep_plan, applied to the parameters of a model in two passes.
//
// Patterns. Names are dotted ("model.layers.3.mlp.experts.gate_up_proj").
// A pattern is dotted too; `*` matches exactly one segment, anything else
// matches itself. A pattern of n segments names
//  - a parameter when it matches a parameter's whole name
//    ("model.layers.*.self_attn.q_proj.weight"), or
//  - a module when it matches the first n < N segments of a parameter's name
//    ("model.layers.*.mlp.experts", "model.layers.*.self_attn.q_proj").
// A module pattern applies its style to every parameter of the module
// (grouped_gemm on mlp.experts places gate_up_proj and down_proj); a
// parameter pattern applies to that parameter and, in pass 2, to its parent
// module (q_proj.weight -> module q_proj).
//
// Passes (applyPlan):
//  1. parameter styles: for every parameter and every mesh dim, the FIRST
//     entry whose pattern names the parameter (or a module containing it) and
//     whose style places parameters on that mesh dim decides the parameter's
//     placement on that dim. Mesh dims no entry decides are Replicate().
//     Entries of a style whose mesh dim the mesh lacks are skipped (a tp plan
//     on a mesh without tp places nothing), but are still checked.
//  2. module styles: a parameter style adds its declared communication
//     (style.h ModuleComm) on its mesh dim to the modules whose parameters it
//     placed in pass 1 (so a parameter that an earlier `replicate` entry kept
//     whole gets no tp communication); a module-only style (ep_router,
//     moe_experts_allreduce): the first matching entry per (module, mesh dim)
//     adds its declaration.
//
// Errors (HarnessError, naming the entry): an unknown style (lists the
// known ones); a pattern that names no parameter or module; a style applied
// to a tensor of the wrong rank; a dim not divisible where the style needs it
// (experts % ep, heads % tp, StridedShard blocks); malformed JSON.
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/pattern.h"
#include "harness/mesh/device_mesh.h"
#include "reference/model/config.h"
#include "reference/placement/placement.h"
#include "reference/plan/style.h"  // ModuleComm

namespace moe::plan {

struct PlanEntry {
  std::string pattern;
  std::string style;
};

struct Plan {
  std::vector<PlanEntry> entries;

  // {"pattern": "style", ...} (key order kept) or [["pattern", "style"], ...].
  static Plan fromJson(const nlohmann::ordered_json& j);
  static Plan parse(const std::string& jsonText);
  static Plan fromFile(const std::string& path);
  nlohmann::ordered_json toJson() const;
};

// `*` matches one segment; equal segment counts required.
bool patternMatches(const std::string& pattern, const std::string& name);
using ::moe::splitDotted;  // common/pattern.h

// One parameter after pass 1.
struct ParamPlacement {
  std::string name;
  std::vector<int64_t> globalShape;
  std::vector<ref::Placement> placements;  // one per mesh dim, mesh-dim order
  std::string style;  // styles that placed it, '+'-joined in mesh-dim order; "" = none
  std::vector<std::string> styles;  // per mesh dim: the style that placed it there ("" = none)
  // The one style a check should see: the first (mesh-dim order) style whose
  // placement shards, else the first style, else "".
  std::string primaryStyle() const;
  // primaryStyle() declares that it shards (PlanStyle::shardsParameters):
  // what the placement check holds this parameter to.
  bool shardedByStyle() const;
  bool isExpert = false;  // fused expert tensor [E, ...]
};

struct AppliedPlan {
  std::vector<ParamPlacement> params;        // parameterSpecs() order
  // module name -> mesh dim -> the communication its styles declared there
  std::map<std::string, std::map<std::string, ModuleComm>> moduleComm;
  std::map<std::string, std::string> moduleStyles;  // module name -> '+'-joined styles

  const ParamPlacement& param(const std::string& name) const;  // HarnessError if unknown
  // What the styles declared for `module` on mesh dim `dim` ({} when none).
  ModuleComm comm(const std::string& module, const std::string& dim) const;
  // The same merged over every mesh dim.
  ModuleComm comm(const std::string& module) const;
  // The mesh dims on which some module declares what `pred` accepts, in
  // first-seen order (e.g. the dims with sequence parallelism).
  std::vector<std::string> dimsDeclaring(bool (*pred)(const ModuleComm&)) const;
  // The parameters of `module` (names starting with "<module>.").
  std::vector<const ParamPlacement*> paramsOf(const std::string& module) const;
};

// Applies `plan` to the parameters of `config` on `mesh` (see the passes and
// errors above). Pure: no communication, the same on every rank.
AppliedPlan applyPlan(const Plan& plan, const ref::ModelConfig& config,
                      const mesh::MeshShape& mesh);

}  // namespace moe::plan
