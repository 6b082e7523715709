#pragma once
// Safetensors checkpoint files: a reader that reads only the bytes a slice
// needs (shard-on-read), and a deterministic writer.
//
// The header is parsed and validated by safetensors_header.h (see the policy
// there); a file the reader opens is therefore fully consistent, and every
// later failure is an I/O error (e.g. the file shrank under us).
// Data is little-endian on disk; the code assumes a little-endian host.
#include <ATen/ATen.h>

#include <atomic>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "reference/io/safetensors_header.h"
#include "reference/io/tensor_source.h"

namespace moe::io {

at::ScalarType toScalarType(SafetensorsDtype dtype);
// Throws HarnessError "<where>: tensor '<name>': dtype ... is not supported".
SafetensorsDtype toSafetensorsDtype(at::ScalarType type,
                                    const std::string& where,
                                    const std::string& name);

class SafetensorsReader : public TensorSource {
 public:
  // Opens and validates `path`; throws HarnessError naming the path and the
  // problem. Only the size prefix and the header are read here.
  explicit SafetensorsReader(const std::string& path);
  ~SafetensorsReader() override;
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  using TensorSource::readSlice;
  std::string where() const override { return path_; }
  std::vector<std::string> names() const override;
  bool has(const std::string& name) const override;
  std::vector<int64_t> shape(const std::string& name) const override;
  at::ScalarType scalarType(const std::string& name) const override;
  // Reads only the bytes of the selected elements: one pread per contiguous
  // run (the innermost dims read whole merge into one run), so a slice of
  // dim 0 is a single pread.
  at::Tensor readSlice(const std::string& name,
                       const std::vector<SliceRange>& ranges) const override;

  const SafetensorsHeader& header() const { return header_; }
  const TensorEntry& entry(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const {
    return header_.metadata;
  }
  uint64_t fileSize() const { return fileSize_; }
  // Bytes read from the file so far, header included. Tests use it to prove
  // that a slice read touched only the slice.
  uint64_t bytesRead() const { return bytesRead_.load(); }

 private:
  // Reads exactly `len` bytes at `offset` or throws HarnessError.
  void preadExact(void* dst, uint64_t len, uint64_t offset) const;

  std::string path_;
  int fd_ = -1;
  uint64_t fileSize_ = 0;
  SafetensorsHeader header_;
  mutable std::atomic<uint64_t> bytesRead_{0};
};

struct WriteOptions {
  // string -> string pairs stored under "__metadata__" (omitted when empty).
  std::map<std::string, std::string> metadata;
};

// Writes `tensors` to `path` in safetensors format.
// tensors: any shapes; dtypes F64/F32/F16/BF16/I64; any device (copied to
// CPU). Names must be non-empty, unique and not "__metadata__".
// Deterministic: the data section holds the tensors in the given order, the
// JSON header lists keys sorted, padded with spaces to a multiple of 8 bytes.
// The file is written next to `path` and renamed into place, so readers
// never see a half-written checkpoint.
void writeSafetensors(const std::string& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const WriteOptions& options = {});

}  // namespace moe::io
