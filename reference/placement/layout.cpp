#include "reference/placement/layout.h"

#include <algorithm>
#include <sstream>

#include "common/error.h"
#include "reference/io/safetensors_header.h"

namespace moe::ref {

namespace {

int64_t totalLength(const std::vector<IndexRange>& ranges) {
  int64_t n = 0;
  for (const IndexRange& r : ranges) n += r.length;
  return n;
}

// Global position of local index `pos` of a dim held as `ranges`; `pos` may
// equal the total length (one past the end), which maps to the end of the
// last range, or to `fallback` when nothing is held.
int64_t globalPosition(const std::vector<IndexRange>& ranges, int64_t pos, int64_t fallback) {
  for (const IndexRange& r : ranges) {
    if (pos < r.length) return r.start + pos;
    pos -= r.length;
  }
  return ranges.empty() ? fallback : ranges.back().start + ranges.back().length;
}

// Appends the global ranges behind local elements [start, start + length).
void selectLocal(const std::vector<IndexRange>& ranges, int64_t start, int64_t length,
                 std::vector<IndexRange>& out) {
  for (const IndexRange& r : ranges) {
    if (length == 0) return;
    if (start >= r.length) {
      start -= r.length;
      continue;
    }
    int64_t take = std::min(length, r.length - start);
    IndexRange piece{r.start + start, take};
    if (!out.empty() && out.back().start + out.back().length == piece.start)
      out.back().length += take;
    else
      out.push_back(piece);
    length -= take;
    start = 0;
  }
  MOE_ASSERT_EQ(length, int64_t{0}, "local selection past the held elements");
}

}  // namespace

IndexRange chunkRange(int64_t n, int64_t parts, int64_t index) {
  if (parts < 1) moe::fail("chunkRange: ", parts, " parts (must be >= 1)");
  if (index < 0 || index >= parts) moe::fail("chunkRange: piece ", index, " of ", parts);
  // torch.chunk: every piece has ceil(n / parts) elements except the tail.
  const int64_t size = (n + parts - 1) / parts;
  const int64_t begin = std::min(n, index * size);
  const int64_t end = std::min(n, begin + size);
  return IndexRange{begin, end - begin};
}

int64_t LocalLayout::numel() const {
  int64_t n = 1;
  for (int64_t s : localShape) n *= s;
  return n;
}

bool LocalLayout::isBox() const {
  for (const auto& r : ranges)
    if (r.size() > 1) return false;
  return true;
}

std::vector<int64_t> LocalLayout::globalIndex(const std::vector<int64_t>& localIndex) const {
  MOE_ASSERT_EQ(localIndex.size(), localShape.size());
  std::vector<int64_t> g(localIndex.size());
  for (size_t d = 0; d < localIndex.size(); ++d) {
    MOE_ASSERT(localIndex[d] >= 0 && localIndex[d] < localShape[d], "dim ", d, " index ",
               localIndex[d], " of local shape ", io::formatShape(localShape));
    g[d] = globalPosition(ranges[d], localIndex[d], offsets[d]);
  }
  return g;
}

std::string LocalLayout::describe() const {
  std::ostringstream os;
  os << "local " << io::formatShape(localShape) << " of global " << io::formatShape(globalShape) << ":";
  for (size_t d = 0; d < ranges.size(); ++d) {
    os << (d ? "," : "") << " dim " << d << " {";
    for (size_t i = 0; i < ranges[d].size(); ++i)
      os << (i ? ", " : "") << "[" << ranges[d][i].start << ", "
         << ranges[d][i].start + ranges[d][i].length << ")";
    os << "}";
  }
  return os.str();
}

LocalLayout computeLayout(const std::vector<int64_t>& globalShape,
                          const std::vector<Placement>& placements,
                          const std::vector<int>& meshSizes,
                          const std::vector<int>& meshCoords) {
  if (placements.size() != meshSizes.size())
    moe::fail("placements ", toString(placements), ": ", placements.size(),
              " placements for a mesh with ", meshSizes.size(), " dims");
  if (meshCoords.size() != meshSizes.size())
    moe::fail("mesh coordinates: ", meshCoords.size(), " coordinates for a mesh with ",
              meshSizes.size(), " dims");
  const int64_t ndim = static_cast<int64_t>(globalShape.size());
  LocalLayout L;
  L.globalShape = globalShape;
  L.ranges.resize(ndim);
  L.offsets.assign(ndim, 0);
  for (int64_t d = 0; d < ndim; ++d) {
    if (globalShape[d] < 0) moe::fail("global shape ", io::formatShape(globalShape), " has a negative size");
    if (globalShape[d] > 0) L.ranges[d].push_back(IndexRange{0, globalShape[d]});
  }
  for (size_t m = 0; m < placements.size(); ++m) {
    const int k = meshSizes[m];
    const int c = meshCoords[m];
    if (k < 1 || c < 0 || c >= k)
      moe::fail("mesh dim ", m, ": coordinate ", c, " for size ", k);
    if (!placements[m].isSharded()) continue;
    Placement p;
    try {
      p = placements[m].normalized(ndim);
    } catch (const HarnessError& e) {
      throw e.withContext(moe::str("mesh dim ", m, " of ", toString(placements), " on shape ",
                                   io::formatShape(globalShape)));
    }
    std::vector<IndexRange>& held = L.ranges[p.dim];
    const int64_t len = totalLength(held);
    std::vector<IndexRange> next;
    if (p.kind == PlacementKind::kShard) {
      IndexRange piece = chunkRange(len, k, c);
      L.offsets[p.dim] = globalPosition(held, piece.start, L.offsets[p.dim]);
      selectLocal(held, piece.start, piece.length, next);
    } else {
      if (len % p.splitFactor != 0)
        moe::fail("mesh dim ", m, ": ", p.toString(), " on shape ", io::formatShape(globalShape),
                  ": dim ", p.dim, " holds ", len, " elements here, not divisible into ",
                  p.splitFactor, " blocks");
      const int64_t block = len / p.splitFactor;
      IndexRange piece = chunkRange(block, k, c);
      L.offsets[p.dim] = globalPosition(held, piece.start, L.offsets[p.dim]);
      for (int64_t j = 0; j < p.splitFactor; ++j)
        selectLocal(held, j * block + piece.start, piece.length, next);
    }
    // DTensor (compute_local_shape_and_global_offset) gives an empty piece
    // the dim's global size as its offset, wherever inside the outer pieces
    // it would have started.
    if (next.empty()) L.offsets[p.dim] = globalShape[p.dim];
    held = std::move(next);
  }
  L.localShape.resize(ndim);
  for (int64_t d = 0; d < ndim; ++d) L.localShape[d] = totalLength(L.ranges[d]);
  return L;
}

std::vector<int64_t> localShape(const std::vector<int64_t>& globalShape,
                                const std::vector<Placement>& placements,
                                const std::vector<int>& meshSizes,
                                const std::vector<int>& meshCoords) {
  return computeLayout(globalShape, placements, meshSizes, meshCoords).localShape;
}

std::vector<std::vector<IndexRange>> localRanges(const std::vector<int64_t>& globalShape,
                                                 const std::vector<Placement>& placements,
                                                 const std::vector<int>& meshSizes,
                                                 const std::vector<int>& meshCoords) {
  return computeLayout(globalShape, placements, meshSizes, meshCoords).ranges;
}

at::Tensor sliceLocal(const at::Tensor& full, const LocalLayout& layout) {
  if (full.sizes().vec() != layout.globalShape)
    moe::fail("sliceLocal: tensor of shape ", io::formatShape(full.sizes().vec()),
              " does not match the layout's global shape ", io::formatShape(layout.globalShape));
  at::Tensor t = full;
  for (size_t d = 0; d < layout.ranges.size(); ++d) {
    const auto& rs = layout.ranges[d];
    const int64_t dim = static_cast<int64_t>(d);
    if (rs.size() == 1 && rs[0].length == layout.globalShape[d]) continue;
    if (rs.empty()) {
      t = t.narrow(dim, 0, 0);
    } else if (rs.size() == 1) {
      t = t.narrow(dim, rs[0].start, rs[0].length);
    } else {
      std::vector<at::Tensor> parts;
      for (const IndexRange& r : rs) parts.push_back(t.narrow(dim, r.start, r.length));
      t = at::cat(parts, dim);
    }
  }
  return t.clone(at::MemoryFormat::Contiguous);
}

namespace {
at::Tensor assembleFrom(const LocalLayout& layout, const BoxReader& read, size_t dim,
                        std::vector<IndexRange>& box) {
  if (dim == layout.ranges.size()) {
    at::Tensor t = read(box);
    std::vector<int64_t> want;
    for (const IndexRange& r : box) want.push_back(r.length);
    if (t.sizes().vec() != want)
      moe::fail("assembleLocal: reader returned shape ", io::formatShape(t.sizes().vec()),
                " for a box of shape ", io::formatShape(want));
    return t;
  }
  std::vector<at::Tensor> parts;
  for (const IndexRange& r : layout.ranges[dim]) {
    box.push_back(r);
    parts.push_back(assembleFrom(layout, read, dim + 1, box));
    box.pop_back();
  }
  return parts.size() == 1 ? parts[0] : at::cat(parts, static_cast<int64_t>(dim));
}
}  // namespace

at::Tensor assembleLocal(const LocalLayout& layout, at::ScalarType dtype, const BoxReader& read) {
  if (layout.numel() == 0) return at::empty(layout.localShape, at::TensorOptions().dtype(dtype));
  std::vector<IndexRange> box;
  at::Tensor t = assembleFrom(layout, read, 0, box);
  return t.is_contiguous() ? t : t.contiguous();
}

std::vector<std::pair<int64_t, int64_t>> toDimRanges(const std::vector<IndexRange>& box) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const IndexRange& r : box) out.emplace_back(r.start, r.start + r.length);
  return out;
}

LocalCheckResult checkLocal(const std::string& name, int rank, const at::Tensor& local,
                            const at::Tensor& full, const LocalLayout& layout,
                            const LocalCheckOptions& options) {
  LocalCheckResult res;
  const std::string who = moe::str("rank ", rank, ": tensor '", name, "': ");
  if (local.sizes().vec() != layout.localShape) {
    res.ok = false;
    res.message = moe::str(who, "local shape ", io::formatShape(local.sizes().vec()), " vs expected ",
                           io::formatShape(layout.localShape), " (", layout.describe(), ")");
    return res;
  }
  if (local.scalar_type() != full.scalar_type()) {
    res.ok = false;
    res.message = moe::str(who, "local dtype ", local.scalar_type(), " vs expected ",
                           full.scalar_type());
    return res;
  }
  at::Tensor expected = sliceLocal(full, layout).to(at::kDouble);
  at::Tensor got = local.to(at::kCPU).to(at::kDouble);
  at::Tensor close = at::isclose(got, expected, options.rtol, options.atol, /*equal_nan=*/true);
  if (close.all().item<bool>()) return res;
  at::Tensor bad = at::logical_not(close);
  const int64_t nbad = bad.sum().item<int64_t>();
  at::Tensor first = at::nonzero(bad)[0];
  std::vector<int64_t> idx(first.data_ptr<int64_t>(), first.data_ptr<int64_t>() + first.numel());
  at::Tensor flatGot = got.reshape({-1}), flatExp = expected.reshape({-1});
  int64_t flat = 0;
  for (size_t d = 0; d < idx.size(); ++d) flat = flat * layout.localShape[d] + idx[d];
  const double maxDiff = at::where(bad, (got - expected).abs(), at::zeros_like(got))
                             .max().item<double>();
  res.ok = false;
  res.message = moe::str(who, "local ", io::formatShape(idx), " (global ",
                         io::formatShape(layout.globalIndex(idx)), ") = ", flatGot[flat].item<double>(),
                         " vs expected ", flatExp[flat].item<double>(), " (", nbad, " of ",
                         got.numel(), " elements differ, max |diff| ", maxDiff, ")");
  return res;
}

}  // namespace moe::ref
