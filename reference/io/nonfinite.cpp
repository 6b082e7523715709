#include "reference/io/nonfinite.h"

#include "common/error.h"
#include "common/json_number.h"

namespace moe::io {

NonFiniteScan scanNonFinite(const at::Tensor& t) {
  NonFiniteScan s;
  s.numel = t.numel();
  if (s.numel == 0 || !at::isFloatingType(t.scalar_type())) return s;
  const at::Tensor bad = at::isfinite(t.detach()).logical_not().reshape({-1});
  s.count = bad.sum().item<int64_t>();
  if (s.count == 0) return s;
  // argmax of a bool tensor is not supported: the first maximum of 0/1 ints.
  s.firstFlat = bad.to(at::kInt).argmax().item<int64_t>();
  s.firstValue = t.detach().reshape({-1})[s.firstFlat].item<double>();
  s.firstIndex.assign(t.dim(), 0);
  for (int64_t d = t.dim() - 1, rest = s.firstFlat; d >= 0; --d) {
    s.firstIndex[d] = rest % t.size(d);
    rest /= t.size(d);
  }
  return s;
}

std::string describeNonFinite(const NonFiniteScan& s) {
  if (!s.found()) return "all finite";
  std::string index = "[";
  for (size_t i = 0; i < s.firstIndex.size(); ++i) index += (i ? ", " : "") + std::to_string(s.firstIndex[i]);
  index += "]";
  return moe::str("index ", index, " (flat ", s.firstFlat, ") is ", nonFiniteName(s.firstValue), "; ", s.count,
                  " of ", s.numel, " elements ", s.count == 1 ? "is" : "are", " non-finite");
}

void requireFiniteTensor(const std::string& where, const std::string& name, const at::Tensor& t) {
  const NonFiniteScan s = scanNonFinite(t);
  if (!s.found()) return;
  fail(where, ": tensor '", name, "' holds non-finite values: ", describeNonFinite(s),
       " (a checkpoint must be finite; --allow-nonfinite-checkpoint, or \"allow_nonfinite_checkpoint\": true "
       "in a case file, loads it anyway)");
}

void requireFiniteTensors(const TensorSource& source, const std::vector<std::string>& names) {
  for (const auto& name : names.empty() ? source.names() : names) requireFiniteTensor(source.whereOf(name), name, source.read(name));
}

}  // namespace moe::io
