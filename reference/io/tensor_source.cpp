#include "reference/io/tensor_source.h"

#include "common/error.h"
#include "reference/io/safetensors_header.h"

namespace moe::io {

at::Tensor TensorSource::readSlice(const std::string& name, int64_t dim,
                                   int64_t start, int64_t length) const {
  const std::vector<int64_t> s = shape(name);
  if (dim < 0 || dim >= static_cast<int64_t>(s.size()))
    fail(where(), ": tensor '", name, "': slice dim ", dim,
         " out of range for shape ", formatShape(s));
  std::vector<SliceRange> ranges(dim + 1);
  for (int64_t d = 0; d < dim; ++d) ranges[d] = {0, s[d]};
  ranges[dim] = {start, length};
  return readSlice(name, ranges);
}

std::vector<SliceRange> completeRanges(const std::string& where,
                                       const std::string& name,
                                       const std::vector<int64_t>& shape,
                                       const std::vector<SliceRange>& ranges) {
  if (ranges.size() > shape.size())
    fail(where, ": tensor '", name, "': ", ranges.size(),
         " slice ranges for a tensor of shape ", formatShape(shape));
  std::vector<SliceRange> out(shape.size());
  for (size_t d = 0; d < shape.size(); ++d) {
    out[d] = d < ranges.size() ? ranges[d] : SliceRange{0, shape[d]};
    const SliceRange& r = out[d];
    // Written so that no sum can overflow for hostile ranges.
    if (r.start < 0 || r.length < 0 || r.start > shape[d] ||
        r.length > shape[d] - r.start)
      fail(where, ": tensor '", name, "': slice of dim ", d, " [", r.start,
           ", ", r.start, "+", r.length, ") is out of range for shape ",
           formatShape(shape));
  }
  return out;
}

void failNoTensor(const std::string& where, const std::string& name,
                  const std::vector<std::string>& names) {
  std::string some;
  constexpr size_t kShown = 5;
  for (size_t i = 0; i < names.size() && i < kShown; ++i)
    some += (i ? ", " : "") + names[i];
  if (names.size() > kShown) some += ", ...";
  fail(where, ": no tensor '", name, "' (", names.size(), " tensors",
       names.empty() ? "" : ": ", some, ")");
}

MapTensorSource::MapTensorSource(std::map<std::string, at::Tensor> tensors,
                                 std::string description)
    : tensors_(std::move(tensors)), description_(std::move(description)) {}

std::vector<std::string> MapTensorSource::names() const {
  std::vector<std::string> out;
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

bool MapTensorSource::has(const std::string& name) const {
  return tensors_.count(name) != 0;
}

const at::Tensor& MapTensorSource::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) failNoTensor(description_, name, names());
  return it->second;
}

std::vector<int64_t> MapTensorSource::shape(const std::string& name) const {
  return get(name).sizes().vec();
}

at::ScalarType MapTensorSource::scalarType(const std::string& name) const {
  return get(name).scalar_type();
}

at::Tensor MapTensorSource::readSlice(
    const std::string& name, const std::vector<SliceRange>& ranges) const {
  at::Tensor t = get(name);
  const std::vector<SliceRange> full =
      completeRanges(description_, name, t.sizes().vec(), ranges);
  for (size_t d = 0; d < full.size(); ++d)
    t = t.narrow(static_cast<int64_t>(d), full[d].start, full[d].length);
  // clone: the contract promises storage the caller owns.
  return t.detach().to(at::kCPU).clone(at::MemoryFormat::Contiguous);
}

std::map<std::string, at::Tensor> readAll(const TensorSource& source) {
  std::map<std::string, at::Tensor> out;
  for (const std::string& name : source.names()) out[name] = source.read(name);
  return out;
}

}  // namespace moe::io
