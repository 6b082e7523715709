#include "reference/model/init.h"

#include <cmath>

#include "common/error.h"

namespace moe::ref {
namespace {

bool isNormWeight(const std::string& name) {
  static const std::string kSuffix = "norm.weight";
  return name.size() >= kSuffix.size() &&
         name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0;
}

// Uniform in (0, 1] from the top 53 bits, never 0 so log() is finite.
double uniform01(uint64_t bits) { return (static_cast<double>(bits >> 11) + 1.0) * 0x1.0p-53; }

// Element i of a normal(0, std) stream keyed by key (Box-Muller, cosine branch).
float normalAt(uint64_t key, uint64_t i, double stddev) {
  const double u1 = uniform01(splitmix64(key ^ splitmix64(2 * i)));
  const double u2 = uniform01(splitmix64(key ^ splitmix64(2 * i + 1)));
  return static_cast<float>(stddev * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

}  // namespace

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t parameterSeed(uint64_t seed, const std::string& name) {
  return splitmix64(splitmix64(seed) ^ fnv1a64(name));
}

torch::Tensor materializeSlice(const std::string& name, const std::vector<int64_t>& fullShape,
                               const std::vector<DimRange>& ranges, uint64_t seed) {
  const size_t rank = fullShape.size();
  if (ranges.size() > rank)
    fail("init: ", name, ": ", ranges.size(), " slice ranges for a tensor of rank ", rank);
  std::vector<int64_t> begin(rank, 0), sliceShape(fullShape);
  for (size_t d = 0; d < ranges.size(); ++d) {
    auto [b, e] = ranges[d];
    if (b < 0 || e < b || e > fullShape[d])
      fail("init: ", name, ": slice [", b, ", ", e, ") of dim ", d, " is outside [0, ",
           fullShape[d], ")");
    begin[d] = b;
    sliceShape[d] = e - b;
  }
  auto out = torch::empty(sliceShape, torch::TensorOptions().dtype(torch::kFloat));
  if (isNormWeight(name)) return out.fill_(1.0);
  // Row-major strides of the full tensor: element value depends on its index there.
  std::vector<int64_t> fullStride(rank, 1);
  for (size_t d = rank; d-- > 1;) fullStride[d - 1] = fullStride[d] * fullShape[d];
  const uint64_t key = parameterSeed(seed, name);
  float* dst = out.data_ptr<float>();
  const int64_t n = out.numel();
  std::vector<int64_t> idx(rank, 0);  // multi-index within the slice
  for (int64_t k = 0; k < n; ++k) {
    int64_t flat = 0;
    for (size_t d = 0; d < rank; ++d) flat += (begin[d] + idx[d]) * fullStride[d];
    dst[k] = normalAt(key, static_cast<uint64_t>(flat), kInitStd);
    for (size_t d = rank; d-- > 0;) {  // odometer increment
      if (++idx[d] < sliceShape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

torch::Tensor initParameter(const std::string& name, const std::vector<int64_t>& shape,
                            uint64_t seed) {
  return materializeSlice(name, shape, /*ranges=*/{}, seed);
}

ParamMap initParameters(const ModelConfig& config, uint64_t seed) {
  ParamMap params;
  for (const auto& spec : parameterSpecs(config))
    params.insert(spec.name, initParameter(spec.name, spec.shape, seed));
  return params;
}

}  // namespace moe::ref
