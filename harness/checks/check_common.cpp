#include "harness/checks/check_common.h"

#include <limits>

#include "common/pattern.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "common/error.h"

namespace moe::checks {

uint64_t fnv1a64(const void* data, size_t n, uint64_t seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = seed;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
  return h;
}

int64_t hashTensor(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU).contiguous();
  return static_cast<int64_t>(fnv1a64(c.data_ptr(), c.numel() * c.element_size()));
}

int64_t hashString(const std::string& s) {
  return static_cast<int64_t>(fnv1a64(s.data(), s.size()));
}

std::string shapeString(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

std::string shapeString(at::IntArrayRef shape) { return shapeString(shape.vec()); }

std::string formatIndexRanges(std::vector<int64_t> indices) {
  std::sort(indices.begin(), indices.end());
  indices.erase(std::unique(indices.begin(), indices.end()), indices.end());
  std::ostringstream os;
  for (size_t i = 0; i < indices.size();) {
    size_t j = i;
    while (j + 1 < indices.size() && indices[j + 1] == indices[j] + 1) ++j;
    os << (i ? ", " : "") << indices[i];
    if (j > i) os << "-" << indices[j];
    i = j + 1;
  }
  return os.str();
}

std::string formatRanks(std::vector<int> ranks) {
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  if (ranks.size() == 1) return moe::str("rank ", ranks[0]);
  std::ostringstream os;
  os << "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (i) os << (i + 1 == ranks.size() ? " and " : ", ");
    os << ranks[i];
  }
  return os.str();
}

std::string formatCounted(const std::string& noun, const std::vector<int64_t>& indices) {
  return noun + (indices.size() > 1 ? "s " : " ") + formatIndexRanges(indices);
}

at::Tensor readLocalSlice(const io::TensorSource& source, const std::string& name,
                          const ref::LocalLayout& layout) {
  return ref::assembleLocal(layout, source.scalarType(name), [&](const std::vector<ref::IndexRange>& box) {
    std::vector<io::SliceRange> ranges;
    for (const auto& b : box) ranges.push_back({b.start, b.length});
    return source.readSlice(name, ranges);
  });
}

// The checks' own collectives run on the communicator's device (the run's
// device lane: CPU, or the rank's GPU) and copy their results to the host
// explicitly; on the CPU lane both moves are no-ops.
std::vector<std::string> allGatherStrings(comm::Communicator& comm, const std::string& s) {
  const int n = comm.size();
  const auto onDevice = at::TensorOptions(at::kLong).device(comm.device());
  at::Tensor len = at::full({1}, static_cast<int64_t>(s.size()), onDevice);
  at::Tensor lensDev = at::empty({n}, onDevice);
  comm.allGather(lensDev, len);
  const at::Tensor lens = lensDev.cpu();
  int64_t maxLen = lens.max().item<int64_t>();
  // int64 words: the communicator has no byte dtype.
  const int64_t words = (maxLen + 7) / 8;
  std::vector<std::string> out(n);
  if (words == 0) return out;
  at::Tensor mine = at::zeros({words}, at::kLong);
  std::memcpy(mine.data_ptr(), s.data(), s.size());
  at::Tensor allDev = at::empty({n * words}, onDevice);
  comm.allGather(allDev, mine.to(comm.device()));
  const at::Tensor all = allDev.cpu();
  const char* base = static_cast<const char*>(all.data_ptr());
  for (int r = 0; r < n; ++r)
    out[r].assign(base + r * words * 8, static_cast<size_t>(lens[r].item<int64_t>()));
  return out;
}

Verdict agreeVerdict(comm::Communicator& comm, const std::string& localFailure) {
  std::vector<std::string> all = allGatherStrings(comm, localFailure);
  Verdict v;
  for (size_t r = 0; r < all.size(); ++r) {
    if (all[r].empty()) continue;
    int global = comm.globalRanks()[r];
    v.failingRanks.push_back(global);
    if (!v.failed) {
      v.failed = true;
      v.firstRank = global;
      v.explanation = all[r];
    }
  }
  return v;
}

namespace {
std::vector<double> allReduceDoubles(comm::Communicator& comm, const std::vector<double>& values,
                                     comm::ReduceOp op) {
  if (values.empty()) return {};
  at::Tensor host = at::empty({static_cast<int64_t>(values.size())}, at::kDouble);
  std::copy(values.begin(), values.end(), host.data_ptr<double>());
  at::Tensor t = host.to(comm.device());  // the run's device lane (no-op on CPU)
  comm.allReduce(t, op);
  host = t.cpu();
  return std::vector<double>(host.data_ptr<double>(), host.data_ptr<double>() + values.size());
}
}  // namespace

std::vector<double> allReduceMax(comm::Communicator& comm, const std::vector<double>& values) {
  return allReduceDoubles(comm, values, comm::ReduceOp::kMax);
}

std::vector<double> allReduceSum(comm::Communicator& comm, const std::vector<double>& values) {
  return allReduceDoubles(comm, values, comm::ReduceOp::kSum);
}

}  // namespace moe::checks

namespace moe::checks {

bool matchesPattern(const std::string& pattern, const std::string& name) {
  return dottedPatternMatches(pattern, name);
}

ValueComparison compareValues(const at::Tensor& actual, const at::Tensor& expected,
                              const ref::LocalLayout& layout, double rtol, double atol,
                              const std::string& expectedWhat) {
  ValueComparison c;
  if (actual.numel() == 0) return c;
  at::Tensor a = actual.detach().to(at::kCPU, at::kDouble).reshape({-1});
  at::Tensor e = expected.detach().to(at::kCPU, at::kDouble).reshape({-1});
  at::Tensor diff = (a - e).abs();
  // Non-finite values are never equal, not even NaN to NaN or Inf to Inf:
  // they are named (the finite check, the checkpoint's own check) instead.
  at::Tensor nonFinite = at::isfinite(a).logical_and(at::isfinite(e)).logical_not();
  at::Tensor bad = diff.gt(atol + rtol * e.abs()).logical_or(nonFinite);
  at::Tensor finiteDiff = at::where(nonFinite, at::zeros_like(diff), diff);
  c.maxAbsDiff = nonFinite.any().item<bool>() ? std::numeric_limits<double>::quiet_NaN() : finiteDiff.max().item<double>();
  int64_t nbad = bad.sum().item<int64_t>();
  if (nbad == 0) return c;
  c.ok = false;
  int64_t flat = bad.to(at::kLong).argmax().item<int64_t>();
  std::vector<int64_t> local(layout.localShape.size());
  for (int64_t d = static_cast<int64_t>(local.size()) - 1, rest = flat; d >= 0; --d) {
    local[d] = rest % layout.localShape[d];
    rest /= layout.localShape[d];
  }
  c.message = moe::str("local ", shapeString(local), " (global ", shapeString(layout.globalIndex(local)),
                       ") = ", a[flat].item<double>(), " vs ", expectedWhat, " ", e[flat].item<double>(),
                       " (", nbad, " of ", a.numel(), " elements differ, max |diff| ", c.maxAbsDiff,
                       nonFinite.any().item<bool>()
                           ? moe::str("; ", nonFinite.sum().item<int64_t>(), " non-finite elements, never equal")
                           : std::string(),
                       ")");
  return c;
}

}  // namespace moe::checks
