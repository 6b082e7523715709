#pragma once
// Test oracle for the loading paths: a rank's expected piece of a full
// tensor computed with torch.chunk / cat per mesh dim, written from the
// placement semantics in docs/styles.md and independent of
// reference/placement/layout.cpp (which every loading path uses).
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "common/error.h"
#include "reference/placement/placement.h"

namespace moe::parallel::testing {

// torch.chunk(t, parts, dim)[index]; an empty piece at the end when chunk
// returns fewer pieces than asked (5 rows over 4 ranks: 2, 2, 1, 0).
inline at::Tensor chunkPiece(const at::Tensor& t, int64_t dim, int64_t parts, int64_t index) {
  auto pieces = t.chunk(parts, dim);
  if (index < static_cast<int64_t>(pieces.size())) return pieces[index];
  return t.narrow(dim, t.size(dim), 0);
}

// Mesh dims in order: Shard(d) takes the coordinate's chunk of the current
// piece; StridedShard(d, s) cuts the current piece into s equal blocks along
// d and concatenates the coordinate's chunk of each; Replicate keeps it.
//   full: [global shape]  ->  [local shape], contiguous
inline at::Tensor expectedSlice(const at::Tensor& full, const std::vector<ref::Placement>& placements,
                                const std::vector<int>& meshSizes, const std::vector<int>& meshCoords) {
  at::Tensor cur = full;
  for (size_t i = 0; i < placements.size(); ++i) {
    const auto& pl = placements[i];
    const int64_t dim = pl.dim < 0 ? pl.dim + full.dim() : pl.dim;
    if (pl.kind == ref::PlacementKind::kShard) {
      cur = chunkPiece(cur, dim, meshSizes[i], meshCoords[i]);
    } else if (pl.kind == ref::PlacementKind::kStridedShard) {
      std::vector<at::Tensor> parts;
      for (const auto& block : cur.chunk(pl.splitFactor, dim))
        parts.push_back(chunkPiece(block, dim, meshSizes[i], meshCoords[i]));
      cur = at::cat(parts, dim);
    } else if (pl.kind == ref::PlacementKind::kPartial) {
      MOE_ASSERT(false, "expectedSlice: Partial placements are not a checkpoint slice");
    }
  }
  return cur.contiguous();
}

// "" when `got` equals `want` bit for bit (dtype, shape and every bit of
// every element: -0.0 != 0.0, and NaN only equals the same NaN); otherwise
// what differs, with the first differing element's two values.
//   got, want: float32, any shape
inline std::string bitwiseDiff(const at::Tensor& got, const at::Tensor& want) {
  if (got.scalar_type() != want.scalar_type())
    return moe::str("dtype ", got.scalar_type(), " vs expected ", want.scalar_type());
  if (got.sizes() != want.sizes()) return moe::str("shape ", got.sizes(), " vs expected ", want.sizes());
  MOE_ASSERT(got.scalar_type() == at::kFloat, "bitwiseDiff compares float32 tensors");
  auto a = got.contiguous().view(at::kInt).flatten(), b = want.contiguous().view(at::kInt).flatten();
  auto differ = a.ne(b);
  const int64_t n = differ.sum().item<int64_t>();
  if (n == 0) return "";
  const int64_t first = differ.nonzero()[0][0].item<int64_t>();
  return moe::str(n, " of ", a.numel(), " elements differ; first at flat index ", first, ": ",
                  got.contiguous().flatten()[first].item<float>(), " vs expected ",
                  want.contiguous().flatten()[first].item<float>());
}

}  // namespace moe::parallel::testing
