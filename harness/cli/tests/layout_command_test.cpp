// `moe-harness layout` in process: its JSON on small examples whose expected
// values are worked out by hand below (not taken from the program), and its
// user errors. The comparison with upstream DTensor over every declared
// placement is placement_oracle.py (ctest placement_oracle.*).
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>
#include <sstream>

#include "common/error.h"
#include "harness/cli/layout_command.h"

namespace moe::cli {
namespace {
using nlohmann::json;

// Runs `moe-harness layout --json <args>` and returns its document.
json layoutJson(std::vector<std::string> args) {
  CLI::App app("test");
  addLayoutCommand(app);
  args.insert(args.begin(), {"layout", "--json"});
  std::reverse(args.begin(), args.end());  // CLI11 parses a reversed vector
  std::ostringstream out;
  auto* old = std::cout.rdbuf(out.rdbuf());
  try {
    app.parse(args);
  } catch (...) {
    std::cout.rdbuf(old);
    throw;
  }
  std::cout.rdbuf(old);
  return json::parse(out.str());
}

json ranksOf(const json& doc) {
  EXPECT_EQ(doc["layouts"].size(), 1u);
  EXPECT_EQ(doc["layouts"][0]["tensors"].size(), 1u);
  return doc["layouts"][0]["tensors"][0]["ranks"];
}

// StridedShard(0, 2) of a [6, 2] tensor over tp=2. By hand: the 6 rows are
// cut into the blocks {0,1,2} and {3,4,5}; each block is torch.chunk'ed over
// 2 ranks into pieces of ceil(3/2) = 2 and 1 rows. Rank 0 holds rows 0,1 (of
// block 0) then 3,4 (of block 1); rank 1 holds row 2, then row 5. A row r of
// 2 columns is flat [2r, 2r+2): rank 0 = flat 0..3 and 6..9, i.e. runs
// [0, 4) [6, 10); rank 1 = flat 4,5 and 10,11: runs [4, 6) [10, 12).
// Offsets are the first element's global index: rows 0 and 2.
TEST(LayoutCommand, StridedShardHoldsItsPieceOfEveryBlock) {
  const json r = ranksOf(layoutJson({"--mesh", "tp=2", "--placements", "[StridedShard(0, 2)]", "--shape", "6,2"}));
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0]["local_shape"], json({4, 2}));
  EXPECT_EQ(r[0]["box"], false);
  EXPECT_EQ(r[0]["offsets"], json({0, 0}));
  EXPECT_EQ(r[0]["ranges"][0], json({{0, 2}, {3, 2}}));
  EXPECT_EQ(r[0]["index_runs"], json({{0, 4}, {6, 4}}));
  EXPECT_EQ(r[1]["local_shape"], json({2, 2}));
  EXPECT_EQ(r[1]["offsets"], json({2, 0}));
  EXPECT_EQ(r[1]["ranges"][0], json({{2, 1}, {5, 1}}));
  EXPECT_EQ(r[1]["index_runs"], json({{4, 2}, {10, 2}}));
}

// FSDP over EP, [StridedShard(0, 2), Shard(0)] on mesh dp=2,ep=2 (rank =
// 2*dp + ep), shape [4, 3]. By hand, left to right: dp cuts rows {0,1},{2,3}
// and chunks each block over 2 ranks, so dp=0 holds rows 0,2 and dp=1 rows
// 1,3; then ep chunks that local pair: (dp0,ep0) row 0, (dp0,ep1) row 2,
// (dp1,ep0) row 1, (dp1,ep1) row 3. That is what sharding rows over ep first
// ({0,1} | {2,3}) and then halving each ep piece over dp gives. Every piece
// is one row: a box at offset [row, 0], flat [3*row, 3*row + 3).
TEST(LayoutCommand, FsdpOverEpIsRightToLeftSharding) {
  const json r = ranksOf(
      layoutJson({"--mesh", "dp=2,ep=2", "--placements", "[StridedShard(0, 2), Shard(0)]", "--shape", "4,3"}));
  ASSERT_EQ(r.size(), 4u);
  const int rows[4] = {0, 2, 1, 3};
  const std::vector<std::vector<int>> coords = {{0, 0}, {0, 1}, {1, 0}, {1, 1}};
  for (int rank = 0; rank < 4; ++rank) {
    SCOPED_TRACE(rank);
    EXPECT_EQ(r[rank]["coords"], json(coords[rank]));
    EXPECT_EQ(r[rank]["local_shape"], json({1, 3}));
    EXPECT_EQ(r[rank]["box"], true);
    EXPECT_EQ(r[rank]["offsets"], json({rows[rank], 0}));
    EXPECT_EQ(r[rank]["index_runs"], json({{3 * rows[rank], 3}}));
  }
}

// Shard(0) of [2, 3] over tp=4: torch.chunk pieces of ceil(2/4) = 1 row, so
// ranks 0 and 1 hold rows 0 and 1 and ranks 2, 3 nothing: local [0, 3], no
// elements, and the offset of an empty piece is the dim's size (2), as
// DTensor's compute_local_shape_and_global_offset says.
TEST(LayoutCommand, EmptyTrailingPiecesHaveNoElementsAndOffsetN) {
  const json r = ranksOf(layoutJson({"--mesh", "{\"tp\":4}", "--placements", "Shard(0)", "--shape", "2,3"}));
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[1]["index_runs"], json({{3, 3}}));
  EXPECT_EQ(r[1]["offsets"], json({1, 0}));
  for (int rank : {2, 3}) {
    EXPECT_EQ(r[rank]["local_shape"], json({0, 3}));
    EXPECT_EQ(r[rank]["offsets"], json({2, 0}));
    EXPECT_EQ(r[rank]["index_runs"], json::array());
  }
}

// Shard of Shard: [5] over dp=2,ep=4. By hand: dp=0 holds rows 0..2
// (ceil(5/2) = 3), dp=1 rows 3,4; ep chunks dp=0's 3 rows into 1,1,1,0 and
// dp=1's 2 rows into 1,1,0,0. Rank 3 (dp0,ep3) and ranks 6, 7 (dp1, ep2/3)
// are empty; DTensor gives every empty piece the offset 5 (the dim's size),
// not "where it would start" inside its outer piece.
TEST(LayoutCommand, EmptyPieceInsideAComposedShardHasOffsetN) {
  const json r = ranksOf(layoutJson({"--mesh", "dp=2,ep=4", "--placements", "[Shard(0), Shard(0)]", "--shape", "5"}));
  ASSERT_EQ(r.size(), 8u);
  const std::vector<std::vector<int>> runs = {{0, 1}, {1, 1}, {2, 1}, {}, {3, 1}, {4, 1}, {}, {}};
  for (int rank = 0; rank < 8; ++rank) {
    SCOPED_TRACE(rank);
    if (runs[rank].empty()) {
      EXPECT_EQ(r[rank]["local_shape"], json({0}));
      EXPECT_EQ(r[rank]["offsets"], json({5}));
    } else {
      EXPECT_EQ(r[rank]["index_runs"], json({runs[rank]}));
      EXPECT_EQ(r[rank]["offsets"], json({runs[rank][0]}));
    }
  }
}

TEST(LayoutCommand, UserErrorsNameTheOption) {
  EXPECT_THROW(layoutJson({"--mesh", "tp", "--placements", "[Shard(0)]", "--shape", "4"}), HarnessError);
  EXPECT_THROW(layoutJson({"--mesh", "tp=2", "--placements", "[Shard(0)]", "--shape", "4,x"}), HarnessError);
  EXPECT_THROW(layoutJson({"--mesh", "tp=2", "--placements", "[Shard(0)]"}), HarnessError);
  // Uneven StridedShard blocks: the harness's documented refusal.
  try {
    layoutJson({"--mesh", "tp=2", "--placements", "[StridedShard(0, 2)]", "--shape", "5"});
    FAIL() << "no error";
  } catch (const HarnessError& e) {
    EXPECT_NE(std::string(e.what()).find("not divisible into 2 blocks"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moe::cli
