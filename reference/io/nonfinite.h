#pragma once
// Finding non-finite values (NaN, +-Inf) in tensors, so they are named, never
// compared: a checkpoint tensor holding them is a user error (unless
// allowed), and a run whose loss, gradients or parameters become non-finite
// fails the `finite` check (docs/checks.md) instead of passing or failing a
// comparison by accident.
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "reference/io/tensor_source.h"

namespace moe::io {

// Where a tensor holds non-finite values.
struct NonFiniteScan {
  int64_t count = 0;                // non-finite elements (0: all finite)
  int64_t numel = 0;                // elements scanned
  int64_t firstFlat = -1;           // row-major index of the first one
  std::vector<int64_t> firstIndex;  // its index per dim
  double firstValue = 0;            // NaN, +inf or -inf
  bool found() const { return count > 0; }
};
// t: any shape, floating or integer dtype (integers are always finite).
NonFiniteScan scanNonFinite(const at::Tensor& t);
// "index [0, 3] (flat 3) is nan; 2 of 64 elements are non-finite".
std::string describeNonFinite(const NonFiniteScan& s);

// Reads every tensor of `source` in `names` (all of them when empty) and
// throws HarnessError on the first one holding a non-finite value:
// "<where>: tensor 'lm_head.weight' holds non-finite values: index [0, 0]
// (flat 0) is nan; 1 of 2048 elements are non-finite (a checkpoint must be
// finite; --allow-nonfinite-checkpoint loads it anyway)".
void requireFiniteTensors(const TensorSource& source, const std::vector<std::string>& names = {});
// The same for one tensor already read from `where`.
void requireFiniteTensor(const std::string& where, const std::string& name, const at::Tensor& t);

}  // namespace moe::io
