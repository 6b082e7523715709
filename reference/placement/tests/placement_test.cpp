// Placement parse/print/equality.
#include <gtest/gtest.h>

#include "common/error.h"
#include "reference/placement/placement.h"

namespace moe::ref {
namespace {

TEST(Placement, ParsesAndPrintsEveryKind) {
  for (const char* text : {"Replicate()", "Shard(0)", "Shard(-1)", "StridedShard(-2, 2)",
                           "StridedShard(1, 3)", "Partial(sum)", "Partial(avg)"}) {
    Placement p = Placement::parse(text);
    EXPECT_EQ(p.toString(), text);
    EXPECT_EQ(Placement::parse(p.toString()), p) << text;
  }
}

TEST(Placement, ParsedFieldsAreTheNamedOnes) {
  Placement s = Placement::parse("  StridedShard( -2 ,2 ) ");
  EXPECT_EQ(s.kind, PlacementKind::kStridedShard);
  EXPECT_EQ(s.dim, -2);
  EXPECT_EQ(s.splitFactor, 2);
  EXPECT_TRUE(s.isSharded());
  Placement a = Placement::parse("Partial(avg)");
  EXPECT_EQ(a.kind, PlacementKind::kPartial);
  EXPECT_EQ(a.reduceOp, comm::ReduceOp::kAvg);
  EXPECT_EQ(Placement::parse("Partial()"), Placement::partial(comm::ReduceOp::kSum));
  EXPECT_EQ(Placement::parse("Shard(3)"), Placement::shard(3));
  EXPECT_TRUE(Placement::parse("Replicate()").isReplicate());
}

TEST(Placement, EqualityComparesTheRelevantFields) {
  EXPECT_NE(Placement::shard(0), Placement::shard(1));
  EXPECT_NE(Placement::shard(1), Placement::stridedShard(1, 1));
  EXPECT_NE(Placement::stridedShard(1, 2), Placement::stridedShard(1, 3));
  EXPECT_NE(Placement::partial(comm::ReduceOp::kSum), Placement::partial(comm::ReduceOp::kAvg));
  EXPECT_NE(Placement::replicate(), Placement::partial());
  Placement r = Placement::replicate();
  r.dim = 5;  // ignored for Replicate
  EXPECT_EQ(r, Placement::replicate());
  // Negative dims differ until normalised against the tensor rank.
  EXPECT_NE(Placement::shard(-1), Placement::shard(2));
  EXPECT_EQ(Placement::shard(-1).normalized(3), Placement::shard(2));
  EXPECT_EQ(Placement::stridedShard(-2, 2).normalized(3), Placement::stridedShard(1, 2));
}

TEST(Placement, NormalizedRejectsOutOfRangeDims) {
  EXPECT_THROW(Placement::shard(3).normalized(3), HarnessError);
  EXPECT_THROW(Placement::shard(-4).normalized(3), HarnessError);
  EXPECT_NO_THROW(Placement::shard(-3).normalized(3));
}

TEST(Placement, MalformedTextIsAnErrorQuotingIt) {
  for (const char* bad : {"Shard", "Shard()", "Shard(x)", "Shard(0, 1)", "Sharded(0)",
                          "StridedShard(0)", "StridedShard(0, 0)", "Partial(max)",
                          "Replicate(0)", "Shard((0))", ""}) {
    try {
      Placement::parse(bad);
      ADD_FAILURE() << "parsed '" << bad << "'";
    } catch (const HarnessError& e) {
      EXPECT_NE(std::string(e.what()).find(moe::str("'", bad, "'")), std::string::npos)
          << e.what();
    }
  }
}

TEST(Placement, ListsParseAndPrint) {
  auto ps = parsePlacements("[Shard(0), StridedShard(-2, 2), Partial(sum)]");
  ASSERT_EQ(ps.size(), 3u);
  EXPECT_EQ(ps[1], Placement::stridedShard(-2, 2));
  EXPECT_EQ(toString(ps), "[Shard(0), StridedShard(-2, 2), Partial(sum)]");
  EXPECT_EQ(parsePlacements("Replicate(), Shard(1)").size(), 2u);
  EXPECT_TRUE(parsePlacements("[]").empty());
  EXPECT_THROW(parsePlacements("[Shard(0), Bogus()]"), HarnessError);
}

}  // namespace
}  // namespace moe::ref
