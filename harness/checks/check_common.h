#pragma once
// Shared pieces of the checks: exact tensor hashes, index-range text, reading
// a rank's checkpoint slice, and the agreement of all ranks on one verdict.
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "harness/comm/communicator.h"
#include "reference/io/tensor_source.h"
#include "reference/placement/layout.h"

namespace moe::checks {

// FNV-1a 64 of `n` bytes, continuing from `seed` (the FNV offset basis by
// default), so several buffers can be chained.
constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
uint64_t fnv1a64(const void* data, size_t n, uint64_t seed = kFnvOffset);
// Exact bitwise hash of a tensor's values in row-major order (the bytes of
// its contiguous CPU copy); shape and dtype are not part of it.
//   t: any shape, any dtype
int64_t hashTensor(const at::Tensor& t);
int64_t hashString(const std::string& s);

// "[64, 32]".
std::string shapeString(const std::vector<int64_t>& shape);
std::string shapeString(at::IntArrayRef shape);
// Sorted indices as compact ranges: {0,1,2,3,6} -> "0-3, 6".
std::string formatIndexRanges(std::vector<int64_t> indices);
// "rank 3" / "ranks 0 and 1" / "ranks 0, 1 and 2" (sorted, deduplicated).
std::string formatRanks(std::vector<int> ranks);
// "experts 4-5" / "expert 4" (the noun gets an 's' for more than one index).
std::string formatCounted(const std::string& noun, const std::vector<int64_t>& indices);

// This rank's piece of tensor `name` as `layout` describes it, read slice by
// slice from `source` (never the whole tensor unless the layout is). The
// dtype is the source's.  -> [layout.localShape]
at::Tensor readLocalSlice(const io::TensorSource& source, const std::string& name,
                          const ref::LocalLayout& layout);

// Every member's string, in group-rank order (collective over `comm`:
// two all-gathers, lengths then payload).
std::vector<std::string> allGatherStrings(comm::Communicator& comm, const std::string& s);

// This rank's first failure (the one that is reported) and how many there
// were.
struct Failures {
  std::string first;
  int count = 0;
  void add(const std::string& m) {
    if (first.empty()) first = m;
    ++count;
  }
};

// The verdict every member agrees on (collective over `comm`).
struct Verdict {
  bool failed = false;
  int firstRank = -1;             // global rank whose explanation wins
  std::string explanation;        // that rank's local failure message
  std::vector<int> failingRanks;  // global ranks that failed locally
};
// `localFailure` is this rank's first failure ("" = passed locally).
Verdict agreeVerdict(comm::Communicator& comm, const std::string& localFailure);

// Element-wise max over the group of `values` (collective, float64).
std::vector<double> allReduceMax(comm::Communicator& comm, const std::vector<double>& values);
// Element-wise sum over the group of `values` (collective, float64).
std::vector<double> allReduceSum(comm::Communicator& comm, const std::vector<double>& values);

}  // namespace moe::checks

namespace moe::checks {
// Plan-pattern match: segments split on '.', '*' matches exactly one segment.
bool matchesPattern(const std::string& pattern, const std::string& name);

// Compares `actual` with `expected` element-wise (|a - e| <= atol + rtol*|e|).
// A non-finite value on either side is never equal (NaN to NaN included);
// maxAbsDiff is then NaN. On a mismatch `message` is "local [i, j] (global
// [gi, gj]) = a vs <expectedWhat> e (k of n elements differ, max |diff| d)".
//   actual, expected: [layout.localShape]
struct ValueComparison {
  bool ok = true;
  double maxAbsDiff = 0;
  std::string message;
};
ValueComparison compareValues(const at::Tensor& actual, const at::Tensor& expected,
                              const ref::LocalLayout& layout, double rtol, double atol,
                              const std::string& expectedWhat);
}  // namespace moe::checks
