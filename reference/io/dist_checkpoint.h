#pragma once
// Distributed checkpoints: the sharded layout a distributed run saves and any
// mesh, plan and wrapper resumes from (issue 19).
//
// Layout of a checkpoint directory DIR (format "moe-harness-dist-v1"):
//   DIR/INTENT               written first by rank 0: {"world_size": N,
//                            "step": k}; lets an interrupted save be
//                            diagnosed (which rank files never arrived);
//   DIR/rank<r>.safetensors  the pieces rank r owns: one safetensors tensor
//                            per piece, key "<tensor>@<o0>,<o1>,..." (the
//                            piece's global offsets); its "__metadata__"
//                            maps each key to {"tensor", "offsets", "hash"};
//   DIR/rank<r>.pieces.json  rank r's piece keys, written before its rank
//                            file (names what a failed save never wrote);
//   DIR/metadata.json        written by rank 0 after every rank file exists:
//                            {"format", "info": {...the run's step, config,
//                            source mesh/plan/wrapper, AdamW state...},
//                            "tensors": {name: {"shape", "dtype", "pieces":
//                            [{"file", "key", "rank", "offsets", "lengths",
//                            "hash"}]}}};
//   DIR/COMPLETE             the completion marker, written LAST;
//   DIR/journal.log          one line per file made, appended when it was
//                            renamed into place ("rank 1 rank1.safetensors",
//                            "rank 0 metadata.json", "rank 0 COMPLETE"): the
//                            order the save really happened in, which the
//                            checkpoint_complete check verifies (COMPLETE
//                            after everything it vouches for).
// A piece is one box of a global tensor (an offset and a length per dim);
// every global element of every tensor is in exactly one piece (the savers'
// owner rule; verifyCoverage() proves it). Hashes are FNV-1a 64 of the
// piece's bytes as stored (little-endian), hex.
//
// Every file is written under a temporary name and renamed into place, so
// a reader never sees half a file; a directory without COMPLETE is refused
// (naming the rank files that are missing when INTENT says how many).
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "reference/io/safetensors.h"
#include "reference/io/tensor_source.h"

namespace moe::io {

constexpr const char* kDistFormat = "moe-harness-dist-v1";
constexpr const char* kDistMetadataFile = "metadata.json";
constexpr const char* kDistCompleteFile = "COMPLETE";
constexpr const char* kDistIntentFile = "INTENT";
constexpr const char* kDistJournalFile = "journal.log";

// FNV-1a 64 of the tensor's bytes (contiguous CPU copy), as 16 hex digits.
std::string contentHash(const at::Tensor& t);

// One box of a global tensor, as a rank writes it.
struct CheckpointPiece {
  std::string tensor;            // the global tensor's name
  std::vector<int64_t> offsets;  // global offset per dim
  at::Tensor data;               // [lengths...]: the box's values
};

// A piece as metadata.json records it.
struct PieceInfo {
  std::string file;  // rank file name (relative to DIR)
  std::string key;   // tensor key inside that file
  int rank = 0;
  std::vector<int64_t> offsets, lengths;
  std::string hash;
};

struct TensorInfo {
  std::vector<int64_t> shape;
  std::string dtype;  // safetensors dtype name: "F32", "BF16", ...
  std::vector<PieceInfo> pieces;
};

struct DistCheckpointMeta {
  nlohmann::json info;  // what the saving run recorded (see run-plan)
  std::map<std::string, TensorInfo> tensors;
  nlohmann::json toJson() const;
  // Throws HarnessError "<where>: ..." naming the field for a bad document.
  static DistCheckpointMeta fromJson(const nlohmann::json& j, const std::string& where);
};

// Writes `text` to DIR/name through a temporary name and a rename; errors
// (HarnessError) name the checkpoint directory.
void writeTextAtomically(const std::string& dir, const std::string& name, const std::string& text);
// A whole file as bytes; HarnessError "checkpoint: cannot read <path>".
std::string readText(const std::string& path);

// "rank<r>.safetensors".
std::string rankFileName(int rank);
// "rank<r>.pieces.json": the piece keys rank r writes, written (temporary
// name + rename) before its rank file, so an interrupted save names the
// pieces that never arrived.
std::string piecesListName(int rank);
// Appends "rank <r> <file>" to DIR/journal.log (O_APPEND: atomic per line).
void appendJournal(const std::string& dir, int rank, const std::string& file);
// Rank 0, before any rank writes: creates DIR and writes INTENT.
void writeIntent(const std::string& dir, int worldSize, int64_t step);
// Writes DIR/rank<r>.safetensors (temporary name, then rename) holding
// `pieces` (no two with the same tensor and offsets), then journals it.
void writeRankPieces(const std::string& dir, int rank, const std::vector<CheckpointPiece>& pieces);
// Rank 0, after every rank's writeRankPieces returned (a barrier): reads the
// headers of rank files 0..worldSize-1 (a missing one is an error naming
// it), builds metadata.json from their pieces and `shapes` (name -> global
// shape: every tensor the checkpoint must hold), writes it, then COMPLETE.
// Coverage is NOT judged here (the checkpoint_complete check does, and the
// reader refuses any range its pieces do not cover exactly once): a saver's
// bug stays visible in the checkpoint instead of aborting the run. Returns
// the metadata written.
DistCheckpointMeta finalizeDistCheckpoint(const std::string& dir, int worldSize, const nlohmann::json& info,
                                          const std::map<std::string, std::vector<int64_t>>& shapes);

// Writes DIR/COMPLETE (temporary name + rename) and journals it.
void writeCompleteMarker(const std::string& dir);

// Coverage of one tensor by its pieces: "" when every element is covered
// exactly once, else a message naming the first gap or overlap and the
// pieces involved. Pieces outside the shape are reported too.
std::string coverageProblem(const std::string& tensor, const TensorInfo& info);

// True when DIR has a COMPLETE marker.
bool isDistCheckpoint(const std::string& dir);

struct DistReadOptions {
  // Verify each piece's hash the first time any part of it is read (the
  // whole piece is read then, once, and kept out of memory afterwards);
  // false reads only the overlapping bytes.
  bool verifyHashes = true;
};

// A TensorSource over a complete distributed checkpoint: readSlice()
// assembles any range from the pieces overlapping it, so a run on any mesh
// and plan reads its own slices. Errors (HarnessError) name the file, the
// tensor and the problem: a missing COMPLETE (with the missing rank files),
// a malformed metadata.json, a rank file that is truncated or lacks a piece,
// a hash mismatch, a range not covered exactly once.
class DistCheckpointSource : public TensorSource {
 public:
  explicit DistCheckpointSource(const std::string& dir, DistReadOptions options = {});
  ~DistCheckpointSource() override;

  using TensorSource::readSlice;
  std::string where() const override { return dir_; }
  std::string whereOf(const std::string& name) const override;
  std::vector<std::string> names() const override;
  bool has(const std::string& name) const override;
  std::vector<int64_t> shape(const std::string& name) const override;
  at::ScalarType scalarType(const std::string& name) const override;
  at::Tensor readSlice(const std::string& name, const std::vector<SliceRange>& ranges) const override;

  const DistCheckpointMeta& meta() const { return meta_; }
  // Reads every piece, verifying its hash; "" or the first problem.
  std::string verifyAllHashes() const;

 private:
  const TensorInfo& info(const std::string& name) const;
  const SafetensorsReader& reader(const std::string& file) const;
  at::Tensor readPiece(const std::string& name, const PieceInfo& piece,
                       const std::vector<SliceRange>& local) const;

  std::string dir_;
  DistReadOptions options_;
  DistCheckpointMeta meta_;
  std::map<std::string, std::unique_ptr<SafetensorsReader>> readers_;
  mutable std::mutex mutex_;
  mutable std::map<std::string, bool> verified_;  // file/key -> hash verified
};

// The tensors of `base` whose names start with `prefix`, without it (e.g.
// "optimizer.exp_avg/" presents the first moments under parameter names).
class PrefixView : public TensorSource {
 public:
  PrefixView(const TensorSource& base, std::string prefix);
  using TensorSource::readSlice;
  std::string where() const override { return base_.where() + " [" + prefix_ + "]"; }
  std::string whereOf(const std::string& name) const override { return base_.whereOf(prefix_ + name); }
  std::vector<std::string> names() const override;
  bool has(const std::string& name) const override { return base_.has(prefix_ + name); }
  std::vector<int64_t> shape(const std::string& name) const override;
  at::ScalarType scalarType(const std::string& name) const override;
  at::Tensor readSlice(const std::string& name, const std::vector<SliceRange>& ranges) const override;

 private:
  const TensorSource& base_;
  std::string prefix_;
};

}  // namespace moe::io
