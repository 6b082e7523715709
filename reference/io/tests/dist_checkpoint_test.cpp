// Distributed checkpoints (dist_checkpoint.h): pieces written by several
// "ranks" read back bit for bit over any range (StridedShard-like pieces
// included), completeness refused before the marker, and one test per bad
// input (missing marker naming the missing rank file, truncated and corrupt
// rank files, a coverage gap or overlap).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "reference/io/dist_checkpoint.h"
#include "reference/io/tests/test_util.h"

namespace moe::io {
namespace {
namespace fs = std::filesystem;
using testing::bitwiseEqual;
using testing::errorOf;
using testing::TempDir;

// Element i of the tensor holds i + 0.5: a misplaced piece is visible.
at::Tensor origin(std::vector<int64_t> shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return (at::arange(n, at::kFloat) + 0.5f).reshape(shape);
}

CheckpointPiece piece(const std::string& name, const at::Tensor& full, std::vector<int64_t> off,
                      std::vector<int64_t> len) {
  at::Tensor v = full;
  for (size_t d = 0; d < off.size(); ++d) v = v.narrow(static_cast<int64_t>(d), off[d], len[d]);
  return {name, off, v.clone()};
}

// "w" [8, 3] saved by 2 ranks in strided blocks (rank 0: rows 0-1 and 4-5,
// rank 1: rows 2-3 and 6-7, as StridedShard(0, 2) over 2 ranks), "b" [5]
// by rank 0 alone (a replicated tensor's single owner).
struct Saved {
  at::Tensor w = origin({8, 3}), b = origin({5});
  std::map<std::string, std::vector<int64_t>> shapes{{"w", {8, 3}}, {"b", {5}}};
  void writeRanks(const std::string& dir, bool withRank1 = true) const {
    writeIntent(dir, 2, 3);
    writeRankPieces(dir, 0, {piece("w", w, {0, 0}, {2, 3}), piece("w", w, {4, 0}, {2, 3}), piece("b", b, {0}, {5})});
    if (withRank1) writeRankPieces(dir, 1, {piece("w", w, {2, 0}, {2, 3}), piece("w", w, {6, 0}, {2, 3})});
  }
};

TEST(DistCheckpoint, WritesReadsBackAnyRange) {
  TempDir dir;
  const Saved s;
  s.writeRanks(dir.file("ck"));
  finalizeDistCheckpoint(dir.file("ck"), 2, {{"step", 3}}, s.shapes);
  EXPECT_TRUE(isDistCheckpoint(dir.file("ck")));
  DistCheckpointSource src(dir.file("ck"));
  EXPECT_EQ(src.names(), (std::vector<std::string>{"b", "w"}));
  EXPECT_EQ(src.meta().info["step"], 3);
  EXPECT_TRUE(bitwiseEqual(src.read("w"), s.w));
  EXPECT_TRUE(bitwiseEqual(src.read("b"), s.b));
  // A range crossing three pieces and a column range.
  EXPECT_TRUE(bitwiseEqual(src.readSlice("w", {{1, 6}, {1, 2}}), s.w.narrow(0, 1, 6).narrow(1, 1, 2)));
  EXPECT_EQ(src.verifyAllHashes(), "");
  DistCheckpointSource noHash(dir.file("ck"), DistReadOptions{/*verifyHashes=*/false});
  EXPECT_TRUE(bitwiseEqual(noHash.readSlice("w", 0, 3, 4), s.w.narrow(0, 3, 4)));
  // The journal records the order: COMPLETE last.
  std::ifstream j(dir.file("ck/journal.log"));
  std::string line, last;
  while (std::getline(j, line)) last = line;
  EXPECT_EQ(last, "rank 0 COMPLETE");
}

TEST(DistCheckpoint, PrefixViewRenames) {
  MapTensorSource m({{"optimizer.exp_avg/w", origin({2})}, {"w", origin({3})}});
  PrefixView v(m, "optimizer.exp_avg/");
  EXPECT_EQ(v.names(), std::vector<std::string>{"w"});
  EXPECT_EQ(v.shape("w"), std::vector<int64_t>{2});
}

TEST(DistCheckpoint, MissingRankFileIsNamedAndNotMarkedComplete) {
  TempDir dir;
  const Saved s;
  s.writeRanks(dir.file("ck"), /*withRank1=*/false);
  const auto e = errorOf([&] { finalizeDistCheckpoint(dir.file("ck"), 2, {}, s.shapes); });
  EXPECT_NE(e.find("rank files missing: rank1.safetensors"), std::string::npos) << e;
  EXPECT_FALSE(isDistCheckpoint(dir.file("ck")));
  const auto r = errorOf([&] { DistCheckpointSource src(dir.file("ck")); });
  EXPECT_NE(r.find("no COMPLETE marker"), std::string::npos) << r;
  EXPECT_NE(r.find("missing rank1.safetensors"), std::string::npos) << r;
  EXPECT_NE(r.find("step 3 by 2 ranks"), std::string::npos) << r;
}

TEST(DistCheckpoint, GapAndOverlapAreRefusedNamingTheElement) {
  TempDir dir;
  const Saved s;
  writeIntent(dir.file("ck"), 1, 1);
  // Rows 2-3 twice, 6-7 never.
  writeRankPieces(dir.file("ck"), 0, {piece("w", s.w, {0, 0}, {4, 3}), piece("w", s.w, {2, 0}, {4, 3}),
                                      piece("b", s.b, {0}, {5})});
  const auto meta = finalizeDistCheckpoint(dir.file("ck"), 1, {}, s.shapes);
  const auto e = coverageProblem("w", meta.tensors.at("w"));
  EXPECT_NE(e.find("tensor 'w' [8, 3]: element [2, 0] is in 2 pieces: w@0,0 (rank0.safetensors), w@2,0"),
            std::string::npos) << e;
  EXPECT_EQ(coverageProblem("b", meta.tensors.at("b")), "");
  // The reader refuses a range the pieces cover twice (or not at all).
  DistCheckpointSource src(dir.file("ck"));
  const auto r = errorOf([&] { src.readSlice("w", 0, 1, 2); });
  EXPECT_NE(r.find("tensor 'w': the pieces cover 9 of the 6 requested elements"), std::string::npos) << r;
  const auto g = errorOf([&] { src.readSlice("w", 0, 6, 2); });
  EXPECT_NE(g.find("the pieces cover 0 of the 6"), std::string::npos) << g;
  TensorInfo gap{{8, 3}, "F32", {{"rank0.safetensors", "w@0,0", 0, {0, 0}, {6, 3}, ""}}};
  EXPECT_NE(coverageProblem("w", gap).find("element [6, 0] is in no piece"), std::string::npos)
      << coverageProblem("w", gap);
}

TEST(DistCheckpoint, TruncatedRankFileNamesTheFile) {
  TempDir dir;
  const Saved s;
  s.writeRanks(dir.file("ck"));
  finalizeDistCheckpoint(dir.file("ck"), 2, {}, s.shapes);
  const auto path = dir.file("ck/rank1.safetensors");
  fs::resize_file(path, fs::file_size(path) - 8);
  const auto e = errorOf([&] { DistCheckpointSource src(dir.file("ck")); });
  EXPECT_NE(e.find("rank1.safetensors"), std::string::npos) << e;
}

TEST(DistCheckpoint, CorruptPieceNamesFileTensorAndHash) {
  TempDir dir;
  const Saved s;
  s.writeRanks(dir.file("ck"));
  finalizeDistCheckpoint(dir.file("ck"), 2, {}, s.shapes);
  // Flip the last data byte of rank 1's file (its last piece: w rows 6-7).
  const auto path = dir.file("ck/rank1.safetensors");
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(-1, std::ios::end);
  char c;
  f.get(c);
  f.seekp(-1, std::ios::end);
  f.put(static_cast<char>(c ^ 0x40));
  f.close();
  DistCheckpointSource src(dir.file("ck"));
  EXPECT_TRUE(bitwiseEqual(src.readSlice("w", 0, 0, 2), s.w.narrow(0, 0, 2)));  // other pieces still read
  const auto e = errorOf([&] { src.readSlice("w", 0, 7, 1); });
  EXPECT_NE(e.find("rank1.safetensors: tensor 'w': piece w@"), std::string::npos) << e;
  EXPECT_NE(e.find("is corrupt: content hash"), std::string::npos) << e;
  EXPECT_NE(src.verifyAllHashes(), "");
}

TEST(DistCheckpoint, HashIsFnv1a64OfTheBytes) {
  // FNV-1a 64 of no bytes is the offset basis; of the byte 'a' (0x61) a
  // published test vector.
  EXPECT_EQ(contentHash(at::empty({0}, at::kByte)), "cbf29ce484222325");
  EXPECT_EQ(contentHash(at::full({1}, 0x61, at::kByte)), "af63dc4c8601ec8c");
}

}  // namespace
}  // namespace moe::io
