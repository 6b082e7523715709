#pragma once
// A non-finite value (NaN, +-Inf) a training run produced. Plain data, so
// judges can include it cheaply.
#include <cstdint>
#include <string>

namespace moe::ref {

// Named, never compared (the `finite` check, docs/checks.md; the reference command's
// error). Within a step values arise in this order: loss, ce, aux, the
// gradients, the grad norm, the updated parameters.
struct NonFiniteValue {
  int64_t step = 0;      // 1-based step it appeared in
  std::string quantity;  // "loss", "ce", "aux", "grad_norm", "gradient", "parameter"
  std::string tensor;    // the parameter's name for "gradient" / "parameter", else ""
  std::string detail;    // "is nan", or where in the tensor: "index [0, 3] (flat 3) is nan; 1 of 64 ..."

  // "step 2: gradient of lm_head.weight: index [0, 3] (flat 3) is nan; ..." / "step 2: loss is nan".
  std::string describe() const {
    std::string what = tensor.empty() ? quantity : quantity + " of " + tensor;
    return "step " + std::to_string(step) + ": " + what + (tensor.empty() ? " " : ": ") + detail;
  }
};

}  // namespace moe::ref
