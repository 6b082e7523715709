#include "reference/train/init_source.h"

#include "common/error.h"
#include "reference/model/init.h"
#include "reference/model/params.h"

namespace moe::ref {

InitTensorSource::InitTensorSource(const ModelConfig& config, uint64_t seed) : seed_(seed) {
  for (const auto& spec : parameterSpecs(config)) shapes_[spec.name] = spec.shape;
}

std::string InitTensorSource::where() const { return str("init(seed ", seed_, ")"); }

std::vector<std::string> InitTensorSource::names() const {
  std::vector<std::string> out;
  for (const auto& kv : shapes_) out.push_back(kv.first);
  return out;
}

bool InitTensorSource::has(const std::string& name) const { return shapes_.count(name) > 0; }

const std::vector<int64_t>& InitTensorSource::shapeOf(const std::string& name) const {
  const auto it = shapes_.find(name);
  if (it == shapes_.end()) io::failNoTensor(where(), name, names());
  return it->second;
}

std::vector<int64_t> InitTensorSource::shape(const std::string& name) const { return shapeOf(name); }

at::ScalarType InitTensorSource::scalarType(const std::string& name) const {
  shapeOf(name);
  return at::kFloat;
}

at::Tensor InitTensorSource::readSlice(const std::string& name, const std::vector<io::SliceRange>& ranges) const {
  const auto& full = shapeOf(name);
  std::vector<DimRange> dims;
  for (const auto& r : io::completeRanges(where(), name, full, ranges)) dims.emplace_back(r.start, r.start + r.length);
  return materializeSlice(name, full, dims, seed_);
}

}  // namespace moe::ref
