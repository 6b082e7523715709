// The finite check's pure parts and the comparisons every check shares:
// non-finite values are named (step, rank, tensor, index), never compared as
// equal (issue 17). The collective verdicts run on gloo ranks in
// checks_gloo_test.cpp.
#include <gtest/gtest.h>

#include "common/tests/text_assert.h"

#include <limits>

#include "harness/checks/check_common.h"
#include "harness/checks/finite_check.h"
#include "harness/checks/parity_check.h"
#include "reference/placement/layout.h"

namespace moe::checks {
namespace {

const double kNan = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

using testutil::has;

ParamShard shard(const std::string& name, at::Tensor local, std::vector<int64_t> globalShape,
                 std::vector<ref::Placement> placements) {
  ParamShard p;
  p.name = name;
  p.local = local;
  p.globalShape = globalShape;
  p.placements = placements;
  return p;
}

TEST(FiniteCheck, FiniteRecordsAndShardsPass) {
  std::vector<StepRecord> steps = {{1, 2.5, 2.4, 0.1, 3.0}, {2, 2.2, 2.1, 0.1, 2.0}};
  std::vector<ParamShard> params = {shard("w", at::ones({2, 3}), {2, 3}, {ref::Placement::replicate()})};
  FiniteInputs in;
  in.rank = 1;
  in.runSteps = &steps;
  in.finalParams = &params;
  EXPECT_EQ(localFiniteFailure(in), "");
  EXPECT_TRUE(scanStep(steps[0], &params, &params).empty());
}

TEST(FiniteCheck, NamesTheStepTheQuantityAndTheIndexOfTheFirstNonFiniteValue) {
  StepRecord r{3, kNan, kNan, 0.1, kInf};
  at::Tensor g = at::zeros({4, 2});
  g[2][1] = kNan;
  g[3][0] = -kInf;
  // Shard(0) over 2 ranks, this is rank 1: global rows 4-7.
  std::vector<ParamShard> grads = {shard("a", at::zeros({4, 2}), {8, 2}, {ref::Placement::shard(0)}),
                                   shard("b", g, {8, 2}, {ref::Placement::shard(0)})};
  const auto found = scanStep(r, &grads, nullptr, /*meshSizes=*/{2}, /*meshCoords=*/{1});
  ASSERT_EQ(found.size(), 4u);
  EXPECT_EQ(found[0].describe(), "step 3: loss is nan");
  EXPECT_EQ(found[1].describe(), "step 3: ce is nan");
  EXPECT_EQ(found[2].describe(),
            "step 3: gradient of b: local index [2, 1] (flat 5; global [6, 1]) is nan; 2 of 8 elements are non-finite");
  EXPECT_EQ(found[3].describe(), "step 3: grad_norm is inf");

  std::vector<StepRecord> steps = {{1, 2.5, 2.4, 0.1, 3.0}, {2, 2.2, 2.1, kNan, 2.0}};
  FiniteInputs in;
  in.rank = 2;
  in.runSteps = &steps;
  EXPECT_EQ(localFiniteFailure(in), "rank 2: step 2: aux is nan");
  // run-plan's own scan (an earlier step) wins over the records.
  std::vector<ref::NonFiniteValue> seen = {{1, "gradient", "b", "local index [0] (flat 0) is nan; 1 of 8 elements is non-finite"}};
  in.runNonFinite = &seen;
  EXPECT_EQ(localFiniteFailure(in), "rank 2: step 1: gradient of b: local index [0] (flat 0) is nan; 1 of 8 elements is non-finite");
}

TEST(FiniteCheck, FailsOnANonFiniteFinalParameterAndOnANonFiniteReference) {
  std::vector<StepRecord> steps = {{1, 2.5, 2.4, 0.1, 3.0}};
  at::Tensor w = at::ones({3});
  w[2] = -kInf;
  std::vector<ParamShard> params = {shard("w", w, {3}, {ref::Placement::replicate()})};
  FiniteInputs in;
  in.rank = 0;
  in.runSteps = &steps;
  in.finalParams = &params;
  EXPECT_EQ(localFiniteFailure(in), "rank 0: step 1: parameter of w: local index [2] (flat 2) is -inf; 1 of 3 elements is non-finite");

  std::vector<ref::NonFiniteValue> reference = {{1, "loss", "", "is nan"}};
  FiniteInputs r;
  r.runSteps = &steps;
  r.referenceNonFinite = &reference;
  r.rank = 0;
  EXPECT_TRUE(has(localFiniteFailure(r), "reference: step 1: loss is nan")) << localFiniteFailure(r);
  r.rank = 1;  // reported once, by rank 0
  EXPECT_EQ(localFiniteFailure(r), "");
}

// The placement and partition checks' comparison: NaN is never equal, not
// even to NaN; Inf not to Inf.
TEST(FiniteCheck, CompareValuesNeverTreatsNonFiniteAsEqual) {
  const ref::LocalLayout layout = ref::computeLayout({3}, {ref::Placement::replicate()}, {1}, {0});
  at::Tensor a = at::tensor({1.0, kNan, 3.0});
  ValueComparison c = compareValues(a, a.clone(), layout, 0, 0, "checkpoint");
  EXPECT_FALSE(c.ok);
  EXPECT_TRUE(has(c.message, "= nan vs checkpoint nan")) << c.message;
  EXPECT_TRUE(has(c.message, "1 non-finite elements, never equal")) << c.message;
  at::Tensor b = at::tensor({1.0, kInf, 3.0});
  EXPECT_FALSE(compareValues(b, b.clone(), layout, 0, 0, "checkpoint").ok);
  EXPECT_TRUE(compareValues(at::tensor({1.0, 2.0, 3.0}), at::tensor({1.0, 2.0, 3.0}), layout, 0, 0, "x").ok);
}

// The parity check's comparison, under both metrics, and its per-step values.
TEST(FiniteCheck, ParityNeverTreatsNonFiniteAsEqual) {
  at::Tensor a = at::tensor({1.0, kNan, 3.0});
  for (const char* dtype : {"fp32", "bf16"}) {
    const ParityTolerance tol = ParityTolerance::forDtype(dtype);
    EXPECT_FALSE(compareTensor(a, a.clone(), tol).ok) << dtype;
    EXPECT_FALSE(compareTensor(a, at::tensor({1.0, 2.0, 3.0}), tol).ok) << dtype;
    at::Tensor i = at::tensor({1.0, kInf, 3.0});
    EXPECT_FALSE(compareTensor(i, i.clone(), tol).ok) << dtype;
  }
  std::vector<StepRecord> run = {{1, kNan, kNan, 0.1, 1.0}};
  ParityInputs in;
  in.runSteps = &run;
  in.referenceSteps = &run;  // the same NaN on both sides
  CheckResult r = checkParity(in);
  EXPECT_FALSE(r.passed);
  EXPECT_TRUE(has(r.explanation, "step 1 loss nan vs reference nan")) << r.explanation;
}

}  // namespace
}  // namespace moe::checks
