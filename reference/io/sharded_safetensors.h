#pragma once
// Checkpoints as Hugging Face writes them, and the one way to open any
// checkpoint path.
//
// A checkpoint directory holds config.json plus exactly one of:
//   model.safetensors                 the whole model in one file;
//   model.safetensors.index.json      an index over any number of shards:
//     {"metadata": {"total_size": N}, "weight_map": {"<tensor>": "<shard file>"}}
//     with the shards next to it (Hugging Face names them
//     model-00001-of-00003.safetensors, but any relative name is accepted).
//
// Index policy (every violation is a HarnessError naming the index file, the
// tensor or field and the value; nothing is silently defaulted or ignored):
//  - the index is one JSON object with no duplicate keys at any level (a
//    tensor listed twice in weight_map is an error, although JSON parsers
//    usually keep the last one);
//  - "weight_map" is required: an object, not empty, of string values;
//    each value is a relative path inside the index's directory (absolute
//    paths, an empty name and ".." components are refused; symlinks are
//    followed, since the Hugging Face cache is made of them);
//  - "metadata" is optional; when present it is an object, and its
//    "total_size", when present, is a non-negative integer that must equal
//    the bytes of all tensors of the shards (their data, headers excluded);
//    other metadata keys and other top-level keys are not interpreted;
//  - every shard the index names exists and is a valid safetensors file
//    (safetensors.h's policy); each shard holds exactly the tensors the index
//    maps to it: one it lacks, one the index does not list, or one that two
//    shards hold is an error. Files of the directory the index does not name
//    are not opened (a stale shard of an earlier save is harmless).
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "reference/io/safetensors.h"
#include "reference/io/tensor_source.h"

namespace moe::io {

constexpr const char* kSingleFileName = "model.safetensors";
constexpr const char* kIndexFileName = "model.safetensors.index.json";

// A parsed, validated index (no shard is opened by parsing).
struct ShardIndex {
  std::optional<uint64_t> totalSize;             // metadata.total_size
  std::map<std::string, std::string> weightMap;  // tensor -> shard file (relative)
  // The distinct shard files, sorted.
  std::vector<std::string> shardFiles() const;
};

// Parses `text`, the contents of an index file, with the policy above (shard
// files are checked as names only). Throws HarnessError "<where>: ...".
ShardIndex parseShardIndex(const std::string& text, const std::string& where);

// A TensorSource over an index and its shards. Each shard's
// SafetensorsReader is opened once, in the constructor; shape, scalarType and
// readSlice go to the shard holding the tensor, so a slice reads only its own
// bytes of that one shard (never a whole file). where() is the index path;
// whereOf(name) is the shard file holding `name`.
class ShardedSafetensorsSource : public TensorSource {
 public:
  // Opens and validates `indexPath` and every shard it names (the whole
  // policy above: headers only, no tensor data is read).
  explicit ShardedSafetensorsSource(const std::string& indexPath);

  using TensorSource::readSlice;
  std::string where() const override { return indexPath_; }
  std::string whereOf(const std::string& name) const override;
  std::vector<std::string> names() const override;
  bool has(const std::string& name) const override;
  std::vector<int64_t> shape(const std::string& name) const override;
  at::ScalarType scalarType(const std::string& name) const override;
  at::Tensor readSlice(const std::string& name,
                       const std::vector<SliceRange>& ranges) const override;

  const ShardIndex& index() const { return index_; }
  // The shard readers, in the order of index().shardFiles().
  const std::vector<std::unique_ptr<SafetensorsReader>>& shards() const { return shards_; }
  // Bytes read from all shards so far, headers included.
  uint64_t bytesRead() const;

 private:
  const SafetensorsReader& shardOf(const std::string& name) const;

  std::string indexPath_;
  ShardIndex index_;
  std::vector<std::unique_ptr<SafetensorsReader>> shards_;
  std::map<std::string, const SafetensorsReader*> byName_;  // tensor -> its shard
};

// Opens a checkpoint given as
//  - a directory holding model.safetensors or model.safetensors.index.json
//    (both is an error naming both: which one is meant is ambiguous; neither
//    is an error naming the directory);
//  - a file whose name ends in ".json": an index (ShardedSafetensorsSource);
//  - any other file: a single safetensors file (SafetensorsReader).
// Throws HarnessError "checkpoint P: ..." for a path that does not exist, and
// the reader's errors for a bad file. Every call site that opens a user's
// checkpoint goes through here, so each accepts every form above.
std::unique_ptr<TensorSource> openCheckpoint(const std::string& path);

// Writes `tensors` as a Hugging Face sharded checkpoint in `dir` (created if
// missing): shards model-0000i-of-0000n.safetensors (each by writeSafetensors
// with options.metadata as its "__metadata__") and, last, the index
// model.safetensors.index.json with {"metadata": {"total_size": bytes},
// "weight_map": ...}, so a reader that sees the index sees complete shards.
// tensors: in the order to store them; as writeSafetensors accepts.
// Split greedily in the given order: a shard is closed when the next tensor
// would take it past maxShardBytes (tensor data bytes, as Hugging Face
// counts); a tensor larger than the limit gets a shard of its own. An index
// is written even for one shard (Hugging Face would write model.safetensors
// alone; writeSafetensors does that). Throws HarnessError naming `dir` for no
// tensors, maxShardBytes == 0, more than 99999 shards, or a dir that already
// holds model.safetensors (the result would be ambiguous to openCheckpoint).
// Returns the shard file names, in order.
std::vector<std::string> writeShardedSafetensors(
    const std::string& dir,
    const std::vector<std::pair<std::string, at::Tensor>>& tensors,
    uint64_t maxShardBytes, const WriteOptions& options = {});

}  // namespace moe::io
