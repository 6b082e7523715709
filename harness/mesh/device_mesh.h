#pragma once
// DeviceMesh: an N-D grid of the world's ranks with named dims.
//
// Rank layout is row-major: the LAST dim varies fastest. For {"dp":2,"ep":2}
// rank = dp * 2 + ep, so ranks 0,1 share dp=0 and form one ep group.
// Dim names: dp, ep, tp, edp, sp, cp, pp (the vocabulary of the plans);
// anything else is an error, so is a size < 1, a repeated name, or a
// product different from the world size.
//
// Groups: comm(dim) is this rank's group along one dim (the ranks that
// differ from it only in that dim); comm({d1, d2}) the group along several
// dims (e.g. the dense data-parallel group {"edp","ep"}). Single-dim groups
// are created in the constructor; multi-dim groups on first use. Both are
// collective over the world: every rank must request the same groups in the
// same order.
#include <memory>
#include <string>
#include <vector>

#include "harness/comm/communicator.h"

namespace moe::mesh {

struct MeshDim {
  std::string name;
  int size = 1;
};

// The pure geometry of a mesh: no communication, usable for any rank.
class MeshShape {
 public:
  MeshShape() = default;
  // Throws HarnessError if `dims` cannot form a mesh over `worldSize` ranks.
  MeshShape(std::vector<MeshDim> dims, int worldSize);

  const std::vector<MeshDim>& dims() const { return dims_; }
  int ndim() const { return static_cast<int>(dims_.size()); }
  int worldSize() const { return worldSize_; }
  int index(const std::string& dim) const;  // -1 when absent
  bool has(const std::string& dim) const { return index(dim) >= 0; }
  int size(const std::string& dim) const;                 // 1 for a dim the mesh lacks
  int coord(int rank, const std::string& dim) const;      // 0 for a dim the mesh lacks
  std::vector<int> coordsOf(int rank) const;
  int rankOf(const std::vector<int>& coords) const;
  // Ranks of the group along `dims` containing `rank`, ascending. Dims the
  // mesh lacks are ignored (size 1).
  std::vector<int> groupRanks(int rank, const std::vector<std::string>& dims) const;
  // The world split into the groups along `dims`, ordered by first rank.
  std::vector<std::vector<int>> partition(const std::vector<std::string>& dims) const;
  // Canonical group name: dims present in the mesh joined by '+', "self" if none.
  std::string groupName(const std::vector<std::string>& dims) const;
  std::string describe() const;  // {"dp":2,"ep":2}

 private:
  std::vector<MeshDim> dims_;
  std::vector<int> strides_;
  int worldSize_ = 1;
};

class DeviceMesh {
 public:
  // Collective over `world`. Throws HarnessError for an invalid shape.
  DeviceMesh(std::shared_ptr<comm::Communicator> world, std::vector<MeshDim> dims);

  // Parses {"dp":2,"ep":2} keeping key order. Throws HarnessError with the
  // offending text on malformed JSON or non-integer sizes.
  static std::vector<MeshDim> parse(const std::string& json);
  // Throws HarnessError if `dims` cannot form a mesh over `worldSize` ranks.
  static void validate(const std::vector<MeshDim>& dims, int worldSize);
  static std::string describe(const std::vector<MeshDim>& dims);  // {"dp":2,"ep":2}
  static const std::vector<std::string>& knownDims();

  const MeshShape& shape() const { return shape_; }
  const std::vector<MeshDim>& dims() const { return shape_.dims(); }
  int ndim() const { return shape_.ndim(); }
  bool has(const std::string& dim) const { return shape_.has(dim); }
  int size(const std::string& dim) const { return shape_.size(dim); }
  int coord(const std::string& dim) const { return shape_.coord(world_->rank(), dim); }
  std::vector<int> coords() const { return shape_.coordsOf(world_->rank()); }

  const std::shared_ptr<comm::Communicator>& world() const { return world_; }
  // This rank's group along `dim` (size-1 group for a dim the mesh lacks).
  std::shared_ptr<comm::Communicator> comm(const std::string& dim);
  std::shared_ptr<comm::Communicator> comm(const std::vector<std::string>& dims);

 private:
  std::shared_ptr<comm::Communicator> world_;
  MeshShape shape_;
};

}  // namespace moe::mesh
