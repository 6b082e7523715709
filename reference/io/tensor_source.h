#pragma once
// TensorSource: read-only, named tensors that can be read whole or by slice.
//
// The one seam every loading path reads checkpoints through. Implementations:
//  - SafetensorsReader (safetensors.h): a file, slices read from disk only;
//  - MapTensorSource (below): tensors already in memory (tests, conversions);
//  - ShardedSafetensorsSource (sharded_safetensors.h): a Hugging Face index
//    plus its shard files, each read through its SafetensorsReader;
//  - FusedExpertView (expert_layout.h): presents per-expert Hugging Face hub
//    tensors under the fused expert names.
// openCheckpoint (sharded_safetensors.h) opens any checkpoint path as one.
//
// Contract:
//  - names() is sorted and has no duplicates.
//  - shape(), scalarType(), read() and readSlice() throw HarnessError naming
//    where() and the tensor when the name is unknown or a range is invalid.
//  - read()/readSlice() return a new contiguous CPU tensor the caller owns
//    (never a view of storage the source keeps).
//  - Reads are const and safe to call from several threads.
#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

namespace moe::io {

// Elements [start, start + length) of one dim.
struct SliceRange {
  int64_t start = 0;
  int64_t length = 0;
};

class TensorSource {
 public:
  virtual ~TensorSource() = default;

  // What to prefix errors with: a file path, or a description.
  virtual std::string where() const = 0;
  // The file holding tensor `name`, for messages about its values (a NaN in
  // a sharded checkpoint is named with its shard, not the index). where()
  // unless the source spans several files.
  virtual std::string whereOf(const std::string& name) const {
    (void)name;
    return where();
  }
  virtual std::vector<std::string> names() const = 0;
  virtual bool has(const std::string& name) const = 0;
  virtual std::vector<int64_t> shape(const std::string& name) const = 0;
  virtual at::ScalarType scalarType(const std::string& name) const = 0;

  // ranges[d] selects along dim d; dims past ranges.size() are read whole.
  // Returns a tensor of shape [ranges[0].length, ..., shape[k], ...].
  virtual at::Tensor readSlice(const std::string& name,
                               const std::vector<SliceRange>& ranges) const = 0;

  // The whole tensor.
  at::Tensor read(const std::string& name) const { return readSlice(name, {}); }
  // [start, start + length) of dim `dim`, every other dim whole.
  at::Tensor readSlice(const std::string& name, int64_t dim, int64_t start,
                       int64_t length) const;
};

// Validates `ranges` against `shape` and completes them to one range per dim.
// Throws HarnessError "<where>: tensor '<name>': ..." when there are more
// ranges than dims or a range is negative or out of bounds.
std::vector<SliceRange> completeRanges(const std::string& where,
                                       const std::string& name,
                                       const std::vector<int64_t>& shape,
                                       const std::vector<SliceRange>& ranges);

// Throws HarnessError "<where>: no tensor '<name>' (<n> tensors, e.g. ...)".
[[noreturn]] void failNoTensor(const std::string& where,
                               const std::string& name,
                               const std::vector<std::string>& names);

// A name -> tensor map as a TensorSource. Tensors are kept as given (any
// device is moved to CPU on read).
class MapTensorSource : public TensorSource {
 public:
  explicit MapTensorSource(std::map<std::string, at::Tensor> tensors,
                           std::string description = "in-memory tensors");

  using TensorSource::readSlice;
  std::string where() const override { return description_; }
  std::vector<std::string> names() const override;
  bool has(const std::string& name) const override;
  std::vector<int64_t> shape(const std::string& name) const override;
  at::ScalarType scalarType(const std::string& name) const override;
  at::Tensor readSlice(const std::string& name,
                       const std::vector<SliceRange>& ranges) const override;

 private:
  const at::Tensor& get(const std::string& name) const;

  std::map<std::string, at::Tensor> tensors_;
  std::string description_;
};

// Reads every tensor of `source`, sorted by name.
std::map<std::string, at::Tensor> readAll(const TensorSource& source);

}  // namespace moe::io
