#pragma once
// Local layouts: which elements of a global tensor a rank holds, computed
// without communication for ANY rank's mesh coordinates. Checkpoint slicing,
// distribute() and the placement check all go through computeLayout().
//
// Composition (several mesh dims splitting one tensor dim). Placements are
// applied in mesh-dim order, as DTensor does: the first mesh dim splits the
// full dim, the next mesh dim splits the piece the first one left, and so on.
// E.g. rows [0, 8) with Shard(0) on "ep" (size 2) then Shard(0) on "edp"
// (size 2): ep=1 keeps [4, 8) and edp=0 of it keeps [4, 6). Each placement
// acts on the rank's current local index space, so StridedShard after Shard
// cuts the rank's piece into blocks, and Shard after StridedShard chunks the
// concatenated blocks.
//
// Replicate and Partial do not change the layout.
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "reference/placement/placement.h"

namespace moe::ref {

// Elements [start, start + length) of one dim of the global tensor.
struct IndexRange {
  int64_t start = 0;
  int64_t length = 0;
  bool operator==(const IndexRange& o) const { return start == o.start && length == o.length; }
};

// [start, length) of piece `index` when `n` elements are split like
// torch.chunk into `parts` pieces (sizes ceil(n/parts), empty pieces at the
// end start at n). Throws HarnessError for parts < 1 or index out of range.
IndexRange chunkRange(int64_t n, int64_t parts, int64_t index);

struct LocalLayout {
  std::vector<int64_t> globalShape;
  std::vector<int64_t> localShape;
  // ranges[d]: the global index ranges of dim d this rank holds, in local
  // order (which is also ascending). Only non-empty ranges; adjacent ranges
  // are merged, so Shard gives one range and StridedShard one per block
  // (unless the blocks touch). Empty when localShape[d] == 0.
  std::vector<std::vector<IndexRange>> ranges;
  // offsets[d]: global index of local element 0 of dim d (DTensor's "global
  // offset"); for an empty piece, globalShape[d], as DTensor's
  // compute_local_shape_and_global_offset (also inside a composed placement).
  std::vector<int64_t> offsets;

  int64_t numel() const;
  // Every dim is one range (or empty): the local tensor is one box of the
  // global tensor at `offsets`.
  bool isBox() const;
  // Global index of a local element (localIndex.size() == ndim).
  std::vector<int64_t> globalIndex(const std::vector<int64_t>& localIndex) const;
  // "local [2, 4] of global [8, 4]: dim 0 {[2, 4)}, dim 1 {[0, 4)}".
  std::string describe() const;
};

// The layout of the rank at `meshCoords`.
//   globalShape: the tensor's shape; placements: one per mesh dim;
//   meshSizes / meshCoords: the mesh's dim sizes and the rank's coordinates.
// Throws HarnessError for a placement count different from the mesh rank, a
// dim out of range, a coordinate out of range, or a StridedShard whose
// current length is not divisible by its split factor.
LocalLayout computeLayout(const std::vector<int64_t>& globalShape,
                          const std::vector<Placement>& placements,
                          const std::vector<int>& meshSizes,
                          const std::vector<int>& meshCoords);

// Shorthands for computeLayout(...).localShape / .ranges.
std::vector<int64_t> localShape(const std::vector<int64_t>& globalShape,
                                const std::vector<Placement>& placements,
                                const std::vector<int>& meshSizes,
                                const std::vector<int>& meshCoords);
std::vector<std::vector<IndexRange>> localRanges(const std::vector<int64_t>& globalShape,
                                                 const std::vector<Placement>& placements,
                                                 const std::vector<int>& meshSizes,
                                                 const std::vector<int>& meshCoords);

// The rank's piece of a full tensor, a new contiguous tensor.
// full: globalShape of `layout`  ->  [layout.localShape]
at::Tensor sliceLocal(const at::Tensor& full, const LocalLayout& layout);

// Reads one box of the global tensor: box[d] is the range of dim d (one per
// dim). Returns a tensor of shape [box[0].length, ...].
using BoxReader = std::function<at::Tensor(const std::vector<IndexRange>& box)>;

// Assembles the rank's local tensor from boxes read by `read` (one call per
// combination of ranges, i.e. one per StridedShard block), concatenated in
// local order. `read` is never called when the piece is empty; an empty
// tensor of `dtype` is returned instead. This is the adapter for any sliced
// source, e.g. reference/model/init.h materializeSlice:
//   assembleLocal(layout, at::kFloat, [&](const auto& box) {
//     return materializeSlice(name, layout.globalShape, toDimRanges(box), seed); });
// Returns [layout.localShape].
at::Tensor assembleLocal(const LocalLayout& layout, at::ScalarType dtype, const BoxReader& read);

// box -> (begin, end) pairs (reference/model/init.h DimRange).
std::vector<std::pair<int64_t, int64_t>> toDimRanges(const std::vector<IndexRange>& box);

struct LocalCheckOptions {
  double rtol = 0;  // 0, 0: bitwise-equal values (checkpoint slices)
  double atol = 0;
};

struct LocalCheckResult {
  bool ok = true;
  // On failure: "rank 2: tensor 'w': local shape [2, 3] vs expected [4, 3]"
  // or "rank 2: tensor 'w': local [1, 0] (global [5, 0]) = 3 vs expected 7
  // (4 of 6 elements differ, max |diff| 4)".
  std::string message;
};

// Compares a rank's local tensor with the slice of `full` that `layout` says
// it holds. Never throws on a mismatch; the result names the rank, the
// tensor and both values.
//   local: [layout.localShape]   full: [layout.globalShape]
LocalCheckResult checkLocal(const std::string& name, int rank, const at::Tensor& local,
                            const at::Tensor& full, const LocalLayout& layout,
                            const LocalCheckOptions& options = {});

}  // namespace moe::ref
