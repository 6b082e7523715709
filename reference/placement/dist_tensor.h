#pragma once
// DistTensor: a distributed tensor = this rank's local tensor + a DeviceMesh +
// one Placement per mesh dim + the global shape (DTensor semantics, see
// placement.h and layout.h for how placements compose).
//
// Contract:
//  - local().sizes() == layout().localShape always (checked on construction).
//  - The mesh is not owned: it must outlive the DistTensor.
//  - fullTensor() and redistribute() are collective over the mesh: every rank
//    calls them, in the same order, with the same arguments. distribute() and
//    distributeFromSource() communicate nothing.
//  - Results are bit-identical to slicing the full tensor, except where a
//    Partial is reduced (the reduction runs in the tensor's dtype over the
//    mesh dim's group, so bf16 sums round as NCCL's do).
//  - Plain tensors: the operations are not differentiable (they do not detach
//    their inputs, but the collectives are outside autograd).
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "harness/mesh/device_mesh.h"
#include "reference/io/tensor_source.h"
#include "reference/placement/layout.h"
#include "reference/placement/placement.h"

namespace moe::ref {

// Mesh sizes of `mesh`, in dim order (the meshSizes of computeLayout()).
std::vector<int> meshSizes(const mesh::DeviceMesh& mesh);
// Mesh coordinates of world rank `rank` (row-major, the last dim fastest, as
// DeviceMesh lays ranks out). Throws HarnessError for a rank outside the mesh.
std::vector<int> meshCoords(const mesh::DeviceMesh& mesh, int rank);

class DistTensor {
 public:
  DistTensor() = default;
  // Wraps an existing local piece. Throws HarnessError naming the rank when
  // local's shape is not the piece `placements` give this rank.
  //   local: [computeLayout(globalShape, placements, mesh, coords).localShape]
  DistTensor(at::Tensor local, mesh::DeviceMesh& mesh, std::vector<Placement> placements,
             std::vector<int64_t> globalShape);

  // Every rank slices its piece from `full`, which it holds whole (the same
  // values on every rank). No communication. For Partial mesh dims, the value
  // is split so that the pending reduction gives `full` back: Partial(sum)
  // keeps it on coordinate 0 and zeros elsewhere, Partial(avg) keeps it on
  // every rank (DTensor's Replicate -> Partial).
  //   full: [global shape]  ->  local: [local shape]
  static DistTensor distribute(const at::Tensor& full, mesh::DeviceMesh& mesh,
                               std::vector<Placement> placements);

  // Reads only this rank's piece of tensor `name` from `source` (one
  // readSlice per StridedShard block); the dtype is the source's. Partial
  // as in distribute(). Throws HarnessError (with the source's context) for
  // an unknown name or an impossible placement.
  static DistTensor distributeFromSource(const std::string& name, const io::TensorSource& source,
                                         mesh::DeviceMesh& mesh,
                                         std::vector<Placement> placements);

  const at::Tensor& local() const { return local_; }
  mesh::DeviceMesh& mesh() const;
  const std::vector<Placement>& placements() const { return placements_; }
  const std::vector<int64_t>& globalShape() const { return globalShape_; }
  int64_t dim() const { return static_cast<int64_t>(globalShape_.size()); }
  at::ScalarType scalarType() const { return local_.scalar_type(); }

  // This rank's layout, and any rank's (`rank` is a world rank). No
  // communication.
  LocalLayout layout() const;
  LocalLayout layoutOf(int rank) const;

  // The full tensor on every rank (collective): shards are all-gathered
  // (uneven pieces included), Partial dims all-reduced.
  //   -> [global shape], contiguous
  at::Tensor fullTensor() const;

  // The same global value under `placements` (collective). Per mesh dim:
  //   Shard/StridedShard -> Replicate: all-gather over the mesh dim;
  //   Replicate -> Shard/StridedShard: local slice, no communication;
  //   Partial -> Replicate: all-reduce;
  //   Partial -> Shard/StridedShard: reduce-scatter;
  //   Replicate -> Partial: local (see distribute());
  //   Partial(sum) <-> Partial(avg): all-reduce, then local;
  //   Shard(a) -> Shard(b): all-gather then local slice (not all-to-all:
  //     simpler and exact; it moves more bytes).
  // When one tensor dim is split by several mesh dims, a change at mesh dim
  // i re-gathers the later mesh dims that split the same tensor dim and
  // slices them again after it, because their pieces are nested in it.
  DistTensor redistribute(std::vector<Placement> placements) const;

  // "tensor [8, 4] float on {"dp":2,"ep":2} as [Replicate(), Shard(0)], local [4, 4]".
  std::string describe() const;

 private:
  at::Tensor local_;
  mesh::DeviceMesh* mesh_ = nullptr;
  std::vector<Placement> placements_;
  std::vector<int64_t> globalShape_;
};

}  // namespace moe::ref
