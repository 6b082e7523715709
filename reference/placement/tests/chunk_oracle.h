#pragma once
// The independent oracle of the placement tests: placements applied in
// mesh-dim order directly to the full tensor with torch.chunk, never through
// computeLayout() (the code under test).
#include <ATen/ATen.h>

#include <vector>

#include "reference/placement/placement.h"

namespace moe::ref::placement_testing {

// Piece c of k of `t` along `dim` as torch.chunk gives it; torch.chunk
// returns fewer pieces when the size is small, the missing ones are empty.
inline at::Tensor chunkOrEmpty(const at::Tensor& t, int64_t k, int64_t dim, int64_t c) {
  auto pieces = t.chunk(k, dim);
  if (c < static_cast<int64_t>(pieces.size())) return pieces[c];
  return t.narrow(dim, 0, 0);
}

// The piece of `t` held at mesh coordinates `coords`.
// t: [global shape] -> [local shape], contiguous
inline at::Tensor expectedPiece(at::Tensor t, const std::vector<Placement>& ps,
                                const std::vector<int>& sizes, const std::vector<int>& coords) {
  for (size_t i = 0; i < ps.size(); ++i) {
    if (!ps[i].isSharded()) continue;
    int64_t d = ps[i].dim < 0 ? ps[i].dim + t.dim() : ps[i].dim;
    if (ps[i].kind == PlacementKind::kShard) {
      t = chunkOrEmpty(t, sizes[i], d, coords[i]);
    } else {
      std::vector<at::Tensor> parts;
      for (const at::Tensor& block : t.chunk(ps[i].splitFactor, d))
        parts.push_back(chunkOrEmpty(block, sizes[i], d, coords[i]));
      t = at::cat(parts, d);
    }
  }
  return t.contiguous();
}

// Every list of `ndim` placements drawn from `choices` (the test matrix).
inline std::vector<std::vector<Placement>> placementCombos(const std::vector<Placement>& choices,
                                                           size_t ndim) {
  std::vector<std::vector<Placement>> combos{{}};
  for (size_t i = 0; i < ndim; ++i) {
    std::vector<std::vector<Placement>> next;
    for (const auto& c : combos)
      for (const Placement& p : choices) {
        auto v = c;
        v.push_back(p);
        next.push_back(v);
      }
    combos = next;
  }
  return combos;
}

}  // namespace moe::ref::placement_testing
