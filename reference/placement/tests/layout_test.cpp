// Pure layout tests. Test data encodes its index (value = flat index in the
// full tensor), and the expected pieces come from torch.chunk applied
// directly to that tensor, never from computeLayout().
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "reference/placement/layout.h"
#include "reference/placement/tests/chunk_oracle.h"

namespace moe::ref {
namespace {

at::Tensor indexTensor(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return at::arange(n, at::kFloat).reshape(shape);
}

using placement_testing::expectedPiece;
using placement_testing::placementCombos;

std::vector<std::vector<int>> allCoords(const std::vector<int>& sizes) {
  std::vector<std::vector<int>> out{{}};
  for (int s : sizes) {
    std::vector<std::vector<int>> next;
    for (const auto& prefix : out)
      for (int c = 0; c < s; ++c) {
        auto v = prefix;
        v.push_back(c);
        next.push_back(v);
      }
    out = next;
  }
  return out;
}

TEST(ChunkRange, MatchesTorchChunkIncludingEmptyTail) {
  // 5 rows over 4 ranks: 2, 2, 1, 0.
  std::vector<int64_t> lens;
  for (int c = 0; c < 4; ++c) lens.push_back(chunkRange(5, 4, c).length);
  EXPECT_EQ(lens, (std::vector<int64_t>{2, 2, 1, 0}));
  EXPECT_EQ(chunkRange(5, 4, 3).start, 5);
  // 1 row over 3 ranks: 1, 0, 0.
  EXPECT_EQ(chunkRange(1, 3, 0), (IndexRange{0, 1}));
  EXPECT_EQ(chunkRange(1, 3, 1).length, 0);
  EXPECT_EQ(chunkRange(1, 3, 2).length, 0);
  EXPECT_THROW(chunkRange(4, 0, 0), HarnessError);
  EXPECT_THROW(chunkRange(4, 2, 2), HarnessError);
}

TEST(Layout, UnevenShardGivesEmptyTrailingPieces) {
  const std::vector<int64_t> shape{5, 3};
  std::vector<int64_t> rows;
  for (int c = 0; c < 4; ++c) {
    LocalLayout l = computeLayout(shape, {Placement::shard(0)}, {4}, {c});
    rows.push_back(l.localShape[0]);
    EXPECT_EQ(l.localShape[1], 3);
  }
  EXPECT_EQ(rows, (std::vector<int64_t>{2, 2, 1, 0}));
  LocalLayout last = computeLayout(shape, {Placement::shard(0)}, {4}, {3});
  EXPECT_TRUE(last.ranges[0].empty());
  EXPECT_EQ(last.numel(), 0);
  EXPECT_EQ(sliceLocal(indexTensor(shape), last).sizes().vec(), (std::vector<int64_t>{0, 3}));

  EXPECT_EQ(localShape({1}, {Placement::shard(0)}, {3}, {0}), (std::vector<int64_t>{1}));
  EXPECT_EQ(localShape({1}, {Placement::shard(0)}, {3}, {1}), (std::vector<int64_t>{0}));
  EXPECT_EQ(localShape({1}, {Placement::shard(0)}, {3}, {2}), (std::vector<int64_t>{0}));
}

TEST(Layout, StridedShardGivesGateRowsThenUpRows) {
  // gate_up [E=2, 2I=8, H=3] with StridedShard(-2, 2) over tp=2: rank 0 holds
  // gate rows 0,1 then up rows 4,5; rank 1 gate rows 2,3 then up rows 6,7.
  const std::vector<int64_t> shape{2, 8, 3};
  const std::vector<Placement> ps{Placement::stridedShard(-2, 2)};
  LocalLayout r0 = computeLayout(shape, ps, {2}, {0});
  LocalLayout r1 = computeLayout(shape, ps, {2}, {1});
  EXPECT_EQ(r0.localShape, (std::vector<int64_t>{2, 4, 3}));
  EXPECT_EQ(r0.ranges[1], (std::vector<IndexRange>{{0, 2}, {4, 2}}));
  EXPECT_EQ(r1.ranges[1], (std::vector<IndexRange>{{2, 2}, {6, 2}}));
  EXPECT_FALSE(r0.isBox());
  EXPECT_EQ(r0.offsets[1], 0);
  EXPECT_EQ(r1.offsets[1], 2);

  at::Tensor full = indexTensor(shape);
  at::Tensor gate = full.narrow(1, 0, 4), up = full.narrow(1, 4, 4);
  at::Tensor want1 = at::cat({gate.narrow(1, 2, 2), up.narrow(1, 2, 2)}, 1);
  EXPECT_TRUE(at::equal(sliceLocal(full, r1), want1));
  // Local row 2 of rank 1 is global row 6 (the first up row it holds).
  EXPECT_EQ(r1.globalIndex({1, 2, 0}), (std::vector<int64_t>{1, 6, 0}));
}

TEST(Layout, StridedShardWithOneRankIsOneMergedRange) {
  LocalLayout l = computeLayout({8, 2}, {Placement::stridedShard(0, 2)}, {1}, {0});
  EXPECT_EQ(l.ranges[0], (std::vector<IndexRange>{{0, 8}}));
  EXPECT_TRUE(l.isBox());
}

TEST(Layout, StridedShardNotDivisibleIsAnError) {
  try {
    computeLayout({7, 2}, {Placement::stridedShard(0, 2)}, {2}, {0});
    ADD_FAILURE() << "no error";
  } catch (const HarnessError& e) {
    EXPECT_NE(std::string(e.what()).find("not divisible into 2 blocks"), std::string::npos)
        << e.what();
  }
}

TEST(Layout, TwoMeshDimsOnOneTensorDimSplitInMeshDimOrder) {
  // Shard(0) on ep (2) then Shard(0) on edp (2) of 8 rows: ep=1, edp=0 holds
  // rows [4, 6).
  LocalLayout l = computeLayout({8, 2}, {Placement::shard(0), Placement::shard(0)}, {2, 2}, {1, 0});
  EXPECT_EQ(l.ranges[0], (std::vector<IndexRange>{{4, 2}}));
  EXPECT_EQ(l.offsets, (std::vector<int64_t>{4, 0}));
}

TEST(Layout, EmptyPieceOffsetIsTheDimSizeAsInDTensor) {
  // 5 rows, Shard(0) on dp (2) then Shard(0) on ep (4): dp=0 holds rows
  // [0, 3), chunked 1, 1, 1, 0 over ep, so (dp0, ep3) is empty. DTensor's
  // compute_local_shape_and_global_offset says 5 there, not 3 (found by the
  // upstream placement oracle, harness/cli/tests/placement_oracle.py).
  LocalLayout l = computeLayout({5}, {Placement::shard(0), Placement::shard(0)}, {2, 4}, {0, 3});
  EXPECT_EQ(l.localShape, (std::vector<int64_t>{0}));
  EXPECT_EQ(l.offsets, (std::vector<int64_t>{5}));
  // StridedShard(0, 2) of 6 rows over 4: blocks of 3 give 1, 1, 1, 0 rows, so
  // rank 3 holds nothing: offset 6 (not 3, where its piece of block 0 would be).
  EXPECT_EQ(computeLayout({6, 2}, {Placement::stridedShard(0, 2)}, {4}, {3}).offsets,
            (std::vector<int64_t>{6, 0}));
}

TEST(Layout, BadArgumentsAreErrors) {
  EXPECT_THROW(computeLayout({4}, {Placement::shard(0)}, {2, 2}, {0, 0}), HarnessError);
  EXPECT_THROW(computeLayout({4}, {Placement::shard(1)}, {2}, {0}), HarnessError);
  EXPECT_THROW(computeLayout({4}, {Placement::shard(0)}, {2}, {2}), HarnessError);
  EXPECT_THROW(computeLayout({4}, {Placement::shard(0)}, {2}, {0, 0}), HarnessError);
}

// Every mesh x placements x shape combination, every rank: the piece equals
// the torch.chunk oracle, and the sharded pieces tile the tensor exactly.
TEST(Layout, MatchesChunkOracleOnEveryRank) {
  const std::vector<std::vector<int>> meshes{{1}, {2}, {3}, {4}, {2, 2}, {2, 3}, {3, 2}};
  const std::vector<std::vector<int64_t>> shapes{{8, 6}, {5, 4}, {1, 2}, {0, 3}, {12, 4}};
  const std::vector<Placement> choices{Placement::replicate(), Placement::shard(0),
                                       Placement::shard(-1), Placement::stridedShard(0, 2),
                                       Placement::stridedShard(-1, 2), Placement::partial()};
  int checked = 0;
  for (const auto& sizes : meshes) {
    const auto combos = placementCombos(choices, sizes.size());
    for (const auto& shape : shapes) {
      at::Tensor full = indexTensor(shape);
      for (const auto& ps : combos) {
        std::vector<LocalLayout> layouts;
        try {
          for (const auto& coords : allCoords(sizes))
            layouts.push_back(computeLayout(shape, ps, sizes, coords));
        } catch (const HarnessError&) {
          continue;  // StridedShard of a length not divisible: covered above
        }
        at::Tensor hits = at::zeros({full.numel()}, at::kLong);
        size_t i = 0;
        for (const auto& coords : allCoords(sizes)) {
          const LocalLayout& l = layouts[i++];
          at::Tensor want = expectedPiece(full, ps, sizes, coords);
          at::Tensor got = sliceLocal(full, l);
          ASSERT_EQ(got.sizes().vec(), want.sizes().vec())
              << toString(ps) << " coords " << coords[0] << " shape " << shape[0];
          ASSERT_TRUE(at::equal(got, want)) << toString(ps) << " " << l.describe();
          ASSERT_EQ(l.localShape, want.sizes().vec());
          // Ranges are sorted, disjoint, non-empty, and within bounds.
          for (size_t d = 0; d < l.ranges.size(); ++d)
            for (size_t j = 0; j < l.ranges[d].size(); ++j) {
              ASSERT_GT(l.ranges[d][j].length, 0);
              if (j) {
                ASSERT_GT(l.ranges[d][j].start,
                          l.ranges[d][j - 1].start + l.ranges[d][j - 1].length);
              }
            }
          // Local element 0 maps to the value (= global flat index) it holds.
          if (l.numel() > 0) {
            auto g = l.globalIndex(std::vector<int64_t>(shape.size(), 0));
            int64_t flat = 0;
            for (size_t d = 0; d < g.size(); ++d) flat = flat * shape[d] + g[d];
            ASSERT_EQ(got.reshape({-1})[0].item<float>(), static_cast<float>(flat));
            ASSERT_EQ(g, l.offsets);
          }
          hits.index_add_(0, got.reshape({-1}).to(at::kLong), at::ones({got.numel()}, at::kLong));
          ++checked;
        }
        // Each element is held by (product of non-sharding mesh sizes) ranks.
        int64_t copies = 1;
        for (size_t m = 0; m < ps.size(); ++m)
          if (!ps[m].isSharded()) copies *= sizes[m];
        ASSERT_TRUE(at::equal(hits, at::full({full.numel()}, copies, at::kLong)))
            << toString(ps);
      }
    }
  }
  EXPECT_GT(checked, 1000);
}

TEST(Layout, AssembleLocalReadsOneBoxPerBlock) {
  const std::vector<int64_t> shape{2, 8, 3};
  at::Tensor full = indexTensor(shape);
  LocalLayout l = computeLayout(shape, {Placement::shard(0), Placement::stridedShard(1, 2)},
                                {2, 2}, {1, 1});
  int reads = 0;
  at::Tensor got = assembleLocal(l, at::kFloat, [&](const std::vector<IndexRange>& box) {
    ++reads;
    at::Tensor t = full;
    for (size_t d = 0; d < box.size(); ++d) t = t.narrow(d, box[d].start, box[d].length);
    return t.contiguous();
  });
  EXPECT_EQ(reads, 2);
  at::Tensor want = expectedPiece(full, {Placement::shard(0), Placement::stridedShard(1, 2)},
                                  {2, 2}, {1, 1});
  EXPECT_TRUE(at::equal(got, want));
  auto dr = toDimRanges({{4, 2}, {0, 3}});
  EXPECT_EQ(dr[0], (std::pair<int64_t, int64_t>{4, 6}));

  LocalLayout empty = computeLayout({1, 3}, {Placement::shard(0)}, {3}, {2});
  at::Tensor e = assembleLocal(empty, at::kBFloat16, [&](const std::vector<IndexRange>&) -> at::Tensor {
    ADD_FAILURE() << "read called for an empty piece";
    return {};
  });
  EXPECT_EQ(e.sizes().vec(), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(e.scalar_type(), at::kBFloat16);
}

TEST(CheckLocal, PassesOnTheRightSliceAndNamesRankTensorAndValuesOtherwise) {
  const std::vector<int64_t> shape{8, 4};
  at::Tensor full = indexTensor(shape);
  LocalLayout l = computeLayout(shape, {Placement::shard(0)}, {2}, {1});
  at::Tensor local = sliceLocal(full, l);
  EXPECT_TRUE(checkLocal("w", 1, local, full, l).ok);

  at::Tensor wrong = local.clone();
  wrong[1][2] = -1;  // global [5, 2] holds 22
  auto r = checkLocal("w", 1, wrong, full, l);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.message.find("rank 1: tensor 'w': local [1, 2] (global [5, 2]) = -1 vs expected 22"),
            std::string::npos)
      << r.message;

  // A replicated tensor declared sharded: the shape differs.
  auto s = checkLocal("w", 1, full, full, l);
  EXPECT_FALSE(s.ok);
  EXPECT_NE(s.message.find("local shape [8, 4] vs expected [4, 4]"), std::string::npos)
      << s.message;

  // The other rank's piece (right shape, wrong rows).
  LocalLayout l0 = computeLayout(shape, {Placement::shard(0)}, {2}, {0});
  EXPECT_FALSE(checkLocal("w", 1, sliceLocal(full, l0), full, l).ok);

  LocalCheckOptions tol;
  tol.atol = 0.5;
  at::Tensor near = local + 0.25;
  EXPECT_TRUE(checkLocal("w", 1, near, full, l, tol).ok);
  EXPECT_FALSE(checkLocal("w", 1, near, full, l).ok);
}

}  // namespace
}  // namespace moe::ref
