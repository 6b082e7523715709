#pragma once
// Deterministic parameter initialisation, independent of world size and of
// the libtorch version.
//
// Every element is a pure function of (seed, parameter name, flat index of the
// element in the full tensor): a counter-based generator (splitmix64 over an
// FNV-1a hash of the name) feeds a Box-Muller transform. So any shard can be
// produced on its own and equals the same slice of the full tensor bit for
// bit, without materialising the full tensor.
//
// Values: weights whose name ends in "norm.weight" (RMSNorm, q_norm, k_norm)
// are 1; every other parameter is normal(0, kInitStd), rounded to fp32.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "reference/model/config.h"
#include "reference/model/params.h"

namespace moe::ref {

constexpr double kInitStd = 0.02;  // Hugging Face initializer_range default

// Stable 64-bit hashes (the same on every platform and run).
uint64_t fnv1a64(const std::string& s);
uint64_t splitmix64(uint64_t x);
uint64_t parameterSeed(uint64_t seed, const std::string& name);

// [begin, end) along one dimension.
using DimRange = std::pair<int64_t, int64_t>;

// The slice ranges[d] of parameter `name` of full shape fullShape, as fp32.
// ranges may be shorter than the rank (missing dims are taken whole).
// Throws HarnessError when a range falls outside the full shape.
torch::Tensor materializeSlice(const std::string& name, const std::vector<int64_t>& fullShape,
                               const std::vector<DimRange>& ranges, uint64_t seed);

// The full parameter (materializeSlice with no ranges).
torch::Tensor initParameter(const std::string& name, const std::vector<int64_t>& shape,
                            uint64_t seed);

// All parameters of the model in parameterSpecs() order, fp32.
ParamMap initParameters(const ModelConfig& config, uint64_t seed);

}  // namespace moe::ref
