#pragma once
// Verification of every collective against a single-process ground truth.
//
// Each rank fills its inputs with values that encode (rank, index) — see
// pattern() — so misrouted data shows up as a wrong rank or index in the
// failure message. Expected outputs are computed locally from the same
// formula for every rank, never through the communicator. Values are chosen
// exact in every checked dtype (bfloat16 included, for groups of <= 4), so
// comparisons are exact except for avg (compared after the same division in
// the same dtype).
//
// Used by `moe-harness selftest` and by the communicator tests.
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "harness/comm/communicator.h"

namespace moe::comm {

struct CollectiveCheckOptions {
  std::vector<at::ScalarType> dtypes = {at::kFloat, at::kBFloat16};
  // Also check all_reduce (only) in these dtypes.
  std::vector<at::ScalarType> reduceOnlyDtypes = {at::kHalf, at::kDouble, at::kLong};
  int64_t cols = 3;  // row width of the 2-D test tensors
  at::Device device = at::kCPU;
};

struct CollectiveCheckReport {
  int passed = 0;
  std::vector<std::string> failures;  // "rank 2 all_gather bfloat16: out[5] = 17 expected 33 (...)"
  bool ok() const { return failures.empty(); }
};

// Value of element `index` contributed by `rank` (exact in bfloat16 for
// ranks < 4 and the index ranges the checks use).
double pattern(int rank, int64_t index, at::ScalarType dtype);

// torch.chunk row split of `total` rows over `n` parts (larger first,
// trailing parts may be empty).
std::vector<int64_t> chunkRows(int64_t total, int n);

// Collective over `comm`: every member calls it with the same options.
CollectiveCheckReport checkCollectives(Communicator& comm, const CollectiveCheckOptions& opts = {});

}  // namespace moe::comm
