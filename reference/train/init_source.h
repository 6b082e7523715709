#pragma once
// The seed's deterministic initialisation (reference/model/init.h) as a
// TensorSource: every read materialises only the requested slice, so a rank
// loading its shards from it never holds the full model (at realistic width
// the full model of every rank would be several times a rank's state).
//
// Contract: the TensorSource contract (tensor_source.h); names() are the
// config's parameterSpecs(), every tensor fp32; readSlice(name, ranges)
// equals initParameter(name, shape, seed) sliced by ranges, bit for bit.
#include <map>
#include <string>
#include <vector>

#include "reference/io/tensor_source.h"
#include "reference/model/config.h"

namespace moe::ref {

class InitTensorSource : public io::TensorSource {
 public:
  InitTensorSource(const ModelConfig& config, uint64_t seed);

  using io::TensorSource::readSlice;
  std::string where() const override;
  std::vector<std::string> names() const override;
  bool has(const std::string& name) const override;
  std::vector<int64_t> shape(const std::string& name) const override;
  at::ScalarType scalarType(const std::string& name) const override;
  at::Tensor readSlice(const std::string& name, const std::vector<io::SliceRange>& ranges) const override;

 private:
  const std::vector<int64_t>& shapeOf(const std::string& name) const;

  std::map<std::string, std::vector<int64_t>> shapes_;
  uint64_t seed_;
};

}  // namespace moe::ref
