#pragma once
// `moe-harness layout`: every rank's layout of a tensor as the harness
// computes it (reference/placement/layout.h computeLayout), for an explicit
// mesh/placements/shape or for every parameter of a case's plan. It is the
// harness side of the upstream-DTensor placement oracle
// (harness/cli/tests/placement_oracle.py, docs/checks.md "Placement oracle").
//
// What "the harness's layout" is: the layout a loader slices the checkpoint
// with, i.e. computeLayout() of the declared placements after the
// loaderPlacements mutation point (null: the declared placements
// themselves). Under `--mutant NAME` a planted loader bug is therefore
// visible here while the declared placements stay the plan's.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "harness/mesh/device_mesh.h"
#include "reference/placement/layout.h"

namespace CLI {
class App;
}
namespace moe::plan {
struct ParamPlacement;
}

namespace moe::cli {

// "ep=2,dp=2" or a JSON object {"ep":2,"dp":2}; dim order is mesh order.
// Throws HarnessError naming the text for anything else.
std::vector<mesh::MeshDim> parseMeshArg(const std::string& text);

// The row-major flat indices into the global tensor of the rank's local
// elements, in local row-major order, as maximal runs [start, length)
// (consecutive indices merged). A box of a contiguous last dim is one run per
// row; an empty piece has none.
std::vector<std::pair<int64_t, int64_t>> flatIndexRuns(const ref::LocalLayout& layout);

// One tensor on every rank of `mesh`:
//   {"param": name, "shape": [..], "placements": "[..]" (declared),
//    "layout_placements": "[..]" (what the loader slices with),
//    "ranks": [{"rank": r, "coords": [..], "local_shape": [..], "box": bool,
//               "offsets": [..], "ranges": [[[start, length], ..] per dim],
//               "index_runs": [[start, length], ..]}, ..]}
// "offsets" is DTensor's global offset (an empty piece: the dim's size);
// it locates the piece only where "box" is true.
nlohmann::ordered_json tensorLayoutJson(const mesh::MeshShape& mesh, const plan::ParamPlacement& param);

// Registers the `layout` subcommand on app.
void addLayoutCommand(CLI::App& app);

}  // namespace moe::cli
