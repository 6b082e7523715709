#include "reference/placement/dist_tensor.h"

#include <initializer_list>
#include <limits>
#include <sstream>

#include "common/error.h"
#include "reference/io/safetensors_header.h"

namespace moe::ref {

namespace {

std::vector<Placement> normalizedAll(const std::vector<Placement>& ps, int64_t ndim) {
  std::vector<Placement> out;
  for (const Placement& p : ps) out.push_back(p.normalized(ndim));
  return out;
}

// Computes the layout of every rank of the mesh, so that an impossible
// placement (e.g. a StridedShard that divides on some ranks only) fails on
// every rank alike, before any rank enters a collective.
void validateOnAllRanks(const std::vector<int64_t>& shape, const std::vector<Placement>& ps,
                        const mesh::DeviceMesh& mesh) {
  const std::vector<int> sizes = meshSizes(mesh);
  if (ps.size() != sizes.size())
    moe::fail("placements ", toString(ps), ": ", ps.size(), " placements for mesh ",
              mesh::DeviceMesh::describe(mesh.dims()), " with ", sizes.size(), " dims");
  for (int r = 0; r < mesh.world()->size(); ++r)
    computeLayout(shape, ps, sizes, meshCoords(mesh, r));
}

template <typename T>
std::vector<T> prefix(const std::vector<T>& v, size_t n) {
  return std::vector<T>(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n));
}

// The rows of piece `c` (of k) of a dim of length `len` under `p`.
int64_t pieceLength(const Placement& p, int64_t len, int k, int c) {
  if (p.kind == PlacementKind::kShard) return chunkRange(len, k, c).length;
  return p.splitFactor * chunkRange(len / p.splitFactor, k, c).length;
}

// Applies sharded placement `p` (normalised) to `t` locally: keeps piece c of k.
at::Tensor sliceOne(const at::Tensor& t, const Placement& p, int k, int c) {
  const int64_t len = t.size(p.dim);
  if (p.kind == PlacementKind::kShard) {
    IndexRange r = chunkRange(len, k, c);
    return t.narrow(p.dim, r.start, r.length).contiguous();
  }
  const int64_t block = len / p.splitFactor;
  IndexRange r = chunkRange(block, k, c);
  std::vector<at::Tensor> parts;
  for (int64_t j = 0; j < p.splitFactor; ++j)
    parts.push_back(t.narrow(p.dim, j * block + r.start, r.length));
  return at::cat(parts, p.dim).contiguous();
}

// Replicate -> Partial on one mesh dim: the pending reduction must give the
// value back.
at::Tensor partitionPartial(const at::Tensor& t, const Placement& p, int coord) {
  if (p.reduceOp == comm::ReduceOp::kSum && coord != 0) return at::zeros_like(t);
  return t;
}

}  // namespace

std::vector<int> meshSizes(const mesh::DeviceMesh& mesh) {
  std::vector<int> sizes;
  for (const mesh::MeshDim& d : mesh.dims()) sizes.push_back(d.size);
  return sizes;
}

std::vector<int> meshCoords(const mesh::DeviceMesh& mesh, int rank) {
  const std::vector<int> sizes = meshSizes(mesh);
  if (rank < 0 || rank >= mesh.world()->size())
    moe::fail("rank ", rank, " is not in mesh ", mesh::DeviceMesh::describe(mesh.dims()),
              " of ", mesh.world()->size(), " ranks");
  // Row-major, the last dim fastest (device_mesh.h).
  std::vector<int> coords(sizes.size());
  for (size_t i = sizes.size(); i-- > 0;) {
    coords[i] = rank % sizes[i];
    rank /= sizes[i];
  }
  return coords;
}

DistTensor::DistTensor(at::Tensor local, mesh::DeviceMesh& mesh, std::vector<Placement> placements,
                       std::vector<int64_t> globalShape)
    : local_(std::move(local)),
      mesh_(&mesh),
      placements_(std::move(placements)),
      globalShape_(std::move(globalShape)) {
  validateOnAllRanks(globalShape_, placements_, mesh);
  LocalLayout l = layout();
  if (local_.sizes().vec() != l.localShape)
    moe::fail("rank ", mesh.world()->rank(), ": DistTensor of global shape ",
              io::formatShape(globalShape_), " as ", toString(placements_), ": local shape ",
              io::formatShape(local_.sizes().vec()), " vs expected ", io::formatShape(l.localShape));
}

mesh::DeviceMesh& DistTensor::mesh() const {
  MOE_ASSERT(mesh_ != nullptr, "DistTensor has no mesh (default-constructed)");
  return *mesh_;
}

LocalLayout DistTensor::layout() const { return layoutOf(mesh().world()->rank()); }

LocalLayout DistTensor::layoutOf(int rank) const {
  return computeLayout(globalShape_, placements_, meshSizes(mesh()), meshCoords(mesh(), rank));
}

DistTensor DistTensor::distribute(const at::Tensor& full, mesh::DeviceMesh& mesh,
                                  std::vector<Placement> placements) {
  std::vector<int64_t> shape = full.sizes().vec();
  validateOnAllRanks(shape, placements, mesh);
  const std::vector<int> coords = mesh.coords();
  at::Tensor local = sliceLocal(full, computeLayout(shape, placements, meshSizes(mesh), coords));
  for (size_t i = 0; i < placements.size(); ++i)
    if (placements[i].isPartial()) local = partitionPartial(local, placements[i], coords[i]);
  return DistTensor(std::move(local), mesh, std::move(placements), std::move(shape));
}

DistTensor DistTensor::distributeFromSource(const std::string& name,
                                            const io::TensorSource& source,
                                            mesh::DeviceMesh& mesh,
                                            std::vector<Placement> placements) {
  std::vector<int64_t> shape = source.shape(name);
  try {
    validateOnAllRanks(shape, placements, mesh);
  } catch (const HarnessError& e) {
    throw e.withContext(moe::str(source.where(), ": tensor '", name, "' of shape ",
                                 io::formatShape(shape)));
  }
  const std::vector<int> coords = mesh.coords();
  LocalLayout l = computeLayout(shape, placements, meshSizes(mesh), coords);
  at::Tensor local = assembleLocal(l, source.scalarType(name), [&](const std::vector<IndexRange>& box) {
    std::vector<io::SliceRange> ranges;
    for (const IndexRange& r : box) ranges.push_back(io::SliceRange{r.start, r.length});
    return source.readSlice(name, ranges);
  });
  for (size_t i = 0; i < placements.size(); ++i)
    if (placements[i].isPartial()) local = partitionPartial(local, placements[i], coords[i]);
  return DistTensor(std::move(local), mesh, std::move(placements), std::move(shape));
}

at::Tensor DistTensor::fullTensor() const {
  return redistribute(std::vector<Placement>(placements_.size(), Placement::replicate())).local();
}

DistTensor DistTensor::redistribute(std::vector<Placement> target) const {
  mesh::DeviceMesh& m = mesh();
  validateOnAllRanks(globalShape_, target, m);
  const int64_t ndim = dim();
  const size_t n = placements_.size();
  std::vector<Placement> cur = normalizedAll(placements_, ndim);
  const std::vector<Placement> dst = normalizedAll(target, ndim);
  const std::vector<int> sizes = meshSizes(m);
  const std::vector<int> coords = m.coords();
  const int rank = m.world()->rank();

  // firstChange[d]: the first mesh dim whose change involves tensor dim d.
  // Mesh dims from there on that split d are nested in the changed piece, so
  // they are gathered first and sliced again afterwards.
  constexpr size_t kNone = std::numeric_limits<size_t>::max();
  std::vector<size_t> firstChange(ndim, kNone);
  for (size_t i = 0; i < n; ++i) {
    if (cur[i] == dst[i]) continue;
    for (const Placement* p : std::initializer_list<const Placement*>{&cur[i], &dst[i]})
      if (p->isSharded() && firstChange[p->dim] == kNone) firstChange[p->dim] = i;
  }

  at::Tensor t = local_;
  // Phase 1: gather, last mesh dim first (it split last).
  for (size_t ii = n; ii-- > 0;) {
    const Placement p = cur[ii];
    if (!p.isSharded() || firstChange[p.dim] == kNone || ii < firstChange[p.dim]) continue;
    const int k = sizes[ii];
    if (k > 1) {
      const int64_t len = computeLayout(globalShape_, prefix(cur, ii), prefix(sizes, ii),
                                        prefix(coords, ii)).localShape[p.dim];
      std::vector<int64_t> rows(k);
      for (int c = 0; c < k; ++c) rows[c] = pieceLength(p, len, k, c);
      MOE_ASSERT_EQ(t.size(p.dim), rows[coords[ii]], "rank ", rank, " mesh dim ", ii);
      at::Tensor in = t.movedim(p.dim, 0).contiguous();
      std::vector<int64_t> outShape = in.sizes().vec();
      outShape[0] = len;
      at::Tensor out = at::empty(outShape, in.options());
      m.comm(m.dims()[ii].name)->allGather(out, in, rows);
      if (p.kind == PlacementKind::kStridedShard) {
        // Rank-major [c][block j] -> block-major [j][c].
        std::vector<at::Tensor> parts;
        for (int64_t j = 0; j < p.splitFactor; ++j) {
          int64_t off = 0;
          for (int c = 0; c < k; ++c) {
            const int64_t each = rows[c] / p.splitFactor;
            parts.push_back(out.narrow(0, off + j * each, each));
            off += rows[c];
          }
        }
        out = at::cat(parts, 0);
      }
      t = out.movedim(0, p.dim).contiguous();
    }
    cur[ii] = Placement::replicate();
  }

  // Phase 2: reduce and slice, first mesh dim first.
  for (size_t i = 0; i < n; ++i) {
    if (cur[i] == dst[i]) continue;
    const int k = sizes[i];
    const int c = coords[i];
    if (cur[i].isPartial()) {
      const comm::ReduceOp op = cur[i].reduceOp;
      auto group = m.comm(m.dims()[i].name);
      if (dst[i].isSharded()) {
        const Placement& p = dst[i];
        const int64_t len = t.size(p.dim);
        at::Tensor in = t.movedim(p.dim, 0).contiguous();
        std::vector<int64_t> rows(k);
        for (int cc = 0; cc < k; ++cc) rows[cc] = pieceLength(p, len, k, cc);
        if (p.kind == PlacementKind::kStridedShard) {
          // Block-major -> rank-major, so that rank cc's rows are contiguous.
          const int64_t block = len / p.splitFactor;
          std::vector<at::Tensor> parts;
          for (int cc = 0; cc < k; ++cc) {
            IndexRange r = chunkRange(block, k, cc);
            for (int64_t j = 0; j < p.splitFactor; ++j)
              parts.push_back(in.narrow(0, j * block + r.start, r.length));
          }
          in = at::cat(parts, 0);
        }
        std::vector<int64_t> outShape = in.sizes().vec();
        outShape[0] = rows[c];
        at::Tensor out = at::empty(outShape, in.options());
        if (k > 1)
          group->reduceScatter(out, in, op, rows);
        else
          out.copy_(in);  // a group of one: the reduction is the value itself
        t = out.movedim(0, p.dim).contiguous();
        cur[i] = dst[i];
        continue;
      }
      at::Tensor red = t.contiguous().clone();  // allReduce is in place; local_ stays
      if (k > 1) group->allReduce(red, op);
      t = red;
      cur[i] = Placement::replicate();
    }
    // cur[i] is Replicate here.
    if (dst[i].isSharded()) {
      t = sliceOne(t, dst[i], k, c);
    } else if (dst[i].isPartial()) {
      t = partitionPartial(t, dst[i], c);
    }
    cur[i] = dst[i];
  }
  if (!t.is_contiguous()) t = t.contiguous();
  return DistTensor(t, m, std::move(target), globalShape_);
}

std::string DistTensor::describe() const {
  std::ostringstream os;
  os << "tensor " << io::formatShape(globalShape_) << " " << local_.scalar_type() << " on "
     << (mesh_ ? mesh::DeviceMesh::describe(mesh_->dims()) : std::string("<no mesh>")) << " as "
     << toString(placements_) << ", local " << io::formatShape(local_.sizes().vec());
  return os.str();
}

}  // namespace moe::ref
