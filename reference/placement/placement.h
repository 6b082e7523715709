#pragma once
// Placement: how one mesh dim lays out a tensor (PyTorch DTensor semantics,
// see docs/styles.md "Placements").
//
//  - Replicate():           every rank of the mesh dim holds the whole value.
//  - Shard(d):              dim d is split like torch.chunk over the mesh dim:
//                           pieces of ceil(n/k), the first ranks get the
//                           larger pieces and trailing ranks may get empty
//                           pieces (5 rows over 4 ranks: 2, 2, 1, 0).
//  - StridedShard(d, s):    dim d is cut into s equal blocks and each rank
//                           holds its Shard(d) piece of every block,
//                           concatenated in block order. For gate_up
//                           [E, 2I, H] with StridedShard(-2, 2) over T ranks,
//                           rank r holds its gate rows, then its up rows.
//                           The dim's length must be divisible by s.
//  - Partial(sum|avg):      a pending reduction: the value is the sum (mean)
//                           over the mesh dim of the ranks' local tensors.
//
// Negative dims count from the end, as in torch; they are normalised against
// the tensor's rank when a layout is computed (normalized()).
//
// Text form (parse/toString): "Replicate()", "Shard(0)", "StridedShard(-2, 2)",
// "Partial(sum)", "Partial(avg)"; "Partial()" parses as Partial(sum).
// Whitespace around tokens is ignored on input.
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "harness/comm/types.h"

namespace moe::ref {

enum class PlacementKind { kReplicate, kShard, kStridedShard, kPartial };

struct Placement {
  PlacementKind kind = PlacementKind::kReplicate;
  int64_t dim = 0;          // Shard / StridedShard: the tensor dim (may be < 0)
  int64_t splitFactor = 1;  // StridedShard: number of blocks (>= 1)
  comm::ReduceOp reduceOp = comm::ReduceOp::kSum;  // Partial: kSum or kAvg

  static Placement replicate();
  static Placement shard(int64_t dim);
  static Placement stridedShard(int64_t dim, int64_t splitFactor);
  static Placement partial(comm::ReduceOp op = comm::ReduceOp::kSum);

  // Throws HarnessError quoting `text` when it is not one of the forms above
  // (or has a split factor < 1, or a Partial op other than sum/avg).
  static Placement parse(const std::string& text);
  std::string toString() const;

  bool isReplicate() const { return kind == PlacementKind::kReplicate; }
  bool isPartial() const { return kind == PlacementKind::kPartial; }
  // Shard or StridedShard: the placement splits a tensor dim.
  bool isSharded() const {
    return kind == PlacementKind::kShard || kind == PlacementKind::kStridedShard;
  }
  // The same placement with `dim` in [0, ndim). Throws HarnessError when the
  // dim is out of range for a tensor of `ndim` dims. Replicate and Partial
  // are returned unchanged.
  Placement normalized(int64_t ndim) const;
};

// Field-wise equality of the fields that matter for the kind (the dim of a
// Replicate is ignored). Shard(-1) and Shard(2) differ here; compare
// normalized() placements when the tensor rank is known.
bool operator==(const Placement& a, const Placement& b);
inline bool operator!=(const Placement& a, const Placement& b) { return !(a == b); }
std::ostream& operator<<(std::ostream& os, const Placement& p);

// "[Shard(0), Replicate()]".
std::string toString(const std::vector<Placement>& placements);
// Parses "Shard(0), Replicate()" or "[Shard(0), Replicate()]" (top-level
// commas separate placements). Throws HarnessError on a malformed item.
std::vector<Placement> parsePlacements(const std::string& text);

}  // namespace moe::ref
