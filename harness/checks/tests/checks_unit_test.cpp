// Pure parts of the checks: hashes, index-range and rank text, expert
// coverage and duplicate detection, parity tolerance math and messages, the
// communication comparison, and the registry. No ranks.
#include <gtest/gtest.h>

#include "common/tests/text_assert.h"

#include "harness/checks/check_common.h"
#include "harness/checks/check_registry.h"
#include "harness/checks/comm_check.h"
#include "harness/checks/expert_check.h"
#include "harness/checks/parity_check.h"
#include "common/error.h"
#include "reference/io/tensor_source.h"

namespace moe::checks {
namespace {

// `text` contains `part` (gmock is not linked).
using testutil::has;

TEST(ChecksHash, Fnv1aKnownVectors) {
  // Published FNV-1a 64 test vectors.
  EXPECT_EQ(fnv1a64("", 0), 0xcbf29ce484222325ULL);
  EXPECT_EQ(fnv1a64("a", 1), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(fnv1a64("foobar", 6), 0x85944171f73967e8ULL);
}

TEST(ChecksHash, TensorHashIsBitwiseAndLayoutFree) {
  at::Tensor t = at::arange(12, at::kFloat).reshape({3, 4});
  EXPECT_EQ(hashTensor(t), hashTensor(t.clone()));
  // A transposed view hashes as its row-major values, i.e. as its contiguous copy.
  EXPECT_EQ(hashTensor(t.t()), hashTensor(t.t().contiguous()));
  EXPECT_NE(hashTensor(t.t()), hashTensor(t));
  at::Tensor u = t.clone();
  u[2][3] = 11.000001f;
  EXPECT_NE(hashTensor(u), hashTensor(t));
  // -0.0 and 0.0 are different bits.
  EXPECT_NE(hashTensor(at::zeros({1})), hashTensor(-at::zeros({1})));
}

TEST(ChecksText, RangesRanksAndShapes) {
  EXPECT_EQ(formatIndexRanges({6, 0, 1, 2, 3, 3}), "0-3, 6");
  EXPECT_EQ(formatIndexRanges({}), "");
  EXPECT_EQ(formatCounted("expert", {4}), "expert 4");
  EXPECT_EQ(formatCounted("expert", {4, 5}), "experts 4-5");
  EXPECT_EQ(formatRanks({3}), "rank 3");
  EXPECT_EQ(formatRanks({1, 0}), "ranks 0 and 1");
  EXPECT_EQ(formatRanks({2, 0, 1}), "ranks 0, 1 and 2");
  EXPECT_EQ(shapeString(std::vector<int64_t>{64, 32}), "[64, 32]");
  EXPECT_TRUE(matchesPattern("model.layers.*.mlp.gate.weight", "model.layers.3.mlp.gate.weight"));
  EXPECT_FALSE(matchesPattern("model.layers.*.weight", "model.layers.3.mlp.weight"));
}

TEST(ChecksExpertCoverage, PartitionGapsOverlapsOutOfRange) {
  EXPECT_EQ(describeCoverage(8, {{0, 1, 2, 3}, {4, 5, 6, 7}}, {0, 1}), "");
  EXPECT_EQ(describeCoverage(6, {{0, 1}, {2, 3}, {4, 5}}, {0, 1, 2}), "");
  EXPECT_EQ(describeCoverage(8, {{0, 1, 2, 3}, {6, 7}}, {0, 1}), "experts 4-5 are held by no ep rank");
  EXPECT_EQ(describeCoverage(8, {{0, 1, 2, 3}, {0, 1, 2, 3}}, {0, 2}),
            "experts 4-7 are held by no ep rank; experts 0-3 are held by ranks 0 and 2");
  EXPECT_TRUE(has(describeCoverage(4, {{0, 1}, {2, 3, 9}}, {0, 1}), "rank 1 holds expert 9 outside [0, 4)"));
}

TEST(ChecksExpertDuplicates, BroadcastBugIsNamedAndReplicasAreNot) {
  // Rank 1 holds rank 0's weights (hashes 10, 11) under experts 2-3.
  ExpertHashes r0{0, {0, 1}, {10, 11}, {10, 11}};
  ExpertHashes r1{1, {2, 3}, {10, 11}, {12, 13}};
  EXPECT_EQ(describeDuplicateWeights({r0, r1}),
            "ranks 0 and 1 hold identical weights for experts 0-1: rank 1's experts 2-3 equal rank 0's experts 0-1");
  // All ranks hold rank 0's experts.
  ExpertHashes r2{2, {4, 5}, {10, 11}, {14, 15}};
  EXPECT_TRUE(has(describeDuplicateWeights({r0, r1, r2}),
              "ranks 0, 1 and 2 hold identical weights for experts 0-1: rank 1's experts 2-3, rank 2's "
                        "experts 4-5 equal rank 0's experts 0-1"));
  // The same expert on two ranks (replicas) is not a duplicate-weights bug.
  ExpertHashes replica{3, {0, 1}, {10, 11}, {10, 11}};
  EXPECT_EQ(describeDuplicateWeights({r0, replica}), "");
  // Experts the checkpoint itself makes identical are fine.
  ExpertHashes same0{0, {0}, {7}, {7}}, same1{1, {1}, {7}, {7}};
  EXPECT_EQ(describeDuplicateWeights({same0, same1}), "");
  // Without checkpoint hashes equal weights for different experts are flagged.
  ExpertHashes u0{0, {0}, {7}, {}}, u1{1, {1}, {7}, {}};
  EXPECT_TRUE(has(describeDuplicateWeights({u0, u1}), "ranks 0 and 1 hold identical weights for expert 0"));
}

TEST(ChecksParityMath, DefaultTolerancesPerDtype) {
  ParityTolerance f = ParityTolerance::forDtype("fp32");
  EXPECT_EQ(f.lossAbs, 1e-5);
  EXPECT_EQ(f.metric, TensorMetric::kAllClose);
  EXPECT_EQ(f.rtol, 1e-4);
  EXPECT_EQ(f.atol, 1e-6);
  ParityTolerance b = ParityTolerance::forDtype("bf16");
  EXPECT_EQ(b.lossAbs, 5e-3);
  EXPECT_EQ(b.metric, TensorMetric::kRelNorm);
  EXPECT_EQ(b.relNorm, 2e-2);
  EXPECT_THROW(ParityTolerance::forDtype("fp8"), HarnessError);
  EXPECT_EQ(f.describe(), "allclose(rtol 0.0001, atol 1e-06)");
}

TEST(ChecksParityMath, AllCloseBoundaryAndScaledGradient) {
  ParityTolerance tol = ParityTolerance::forDtype("fp32");
  at::Tensor ref = at::full({4}, 100.0, at::kDouble);
  // |d| = atol + rtol*|ref| exactly passes, a bit more fails.
  EXPECT_TRUE(compareTensor(ref + (1e-6 + 1e-2) * 0.999, ref, tol).ok);
  EXPECT_FALSE(compareTensor(ref + (1e-6 + 1e-2) * 1.01, ref, tol).ok);

  at::Tensor g = at::arange(1, 7, at::kFloat).reshape({2, 3});
  TensorDiff d = compareTensor(g * 2, g, tol);
  EXPECT_FALSE(d.ok);
  EXPECT_NEAR(d.normRatio, 2.0, 1e-12);
  EXPECT_NEAR(d.relNormError, 1.0, 1e-12);
  EXPECT_EQ(d.maxAbsDiff, 6.0);
  std::string m = describeTensorFailure(1, "step-1 gradient", "model.layers.0.mlp.experts.down_proj", d, tol);
  EXPECT_TRUE(has(m, "rank 1: step-1 gradient of model.layers.0.mlp.experts.down_proj: max |diff| 6 at "
                           "local [1, 2] (run 12 vs reference 6)"));
  EXPECT_TRUE(has(m, "relative norm error 1 (run/reference norm ratio 2.000)"));
}

TEST(ChecksParityMath, RelativeNormForBf16) {
  ParityTolerance tol = ParityTolerance::forDtype("bf16");
  at::Tensor ref = at::arange(1, 101, at::kFloat);
  EXPECT_TRUE(compareTensor(ref * 1.01, ref, tol).ok);  // relative norm error 0.01
  TensorDiff d = compareTensor((ref * 2).to(at::kBFloat16), ref, tol);
  EXPECT_FALSE(d.ok);
  EXPECT_EQ(describeTensorFailure(1, "step-1 gradient", "w", d, tol).rfind(
                "rank 1: step-1 gradient of w: relative norm error 1 (run/reference norm ratio 2.000) exceeds 0.02",
                0),
            0u);
  // Zero reference: the ratio is infinite, never a silent pass.
  EXPECT_FALSE(compareTensor(at::ones({3}), at::zeros({3}), tol).ok);
  EXPECT_TRUE(compareTensor(at::zeros({3}), at::zeros({3}), tol).ok);
}

TEST(ChecksParity, PerturbedLossFailsAndMaximaAreReported) {
  std::vector<StepRecord> ref = {{1, 2.5, 2.4, 0.1, 3.0}, {2, 2.3, 2.2, 0.1, 2.0}};
  std::vector<StepRecord> run = ref;
  run[1].loss += 1e-3;
  ParityInputs in;
  in.rank = 0;
  in.runSteps = &run;
  in.referenceSteps = &ref;
  CheckResult r = checkParity(in);
  EXPECT_FALSE(r.passed);
  EXPECT_TRUE(has(r.explanation, "rank 0: step 2 loss 2.301 vs reference 2.3 (|diff| 0.001 exceeds 1e-05)"));
  EXPECT_NEAR(r.measured["loss_max_abs_diff"].get<double>(), 1e-3, 1e-12);
  run = ref;
  r = checkParity(in);
  EXPECT_TRUE(r.passed) << r.explanation;
  EXPECT_EQ(r.measured["loss_max_abs_diff"].get<double>(), 0.0);
  // The bf16 loss tolerance accepts it.
  run[1].loss += 1e-3;
  ParityCheckOptions o;
  o.dtype = "bf16";
  EXPECT_TRUE(checkParity(in, o).passed);
}

// The explanation names the most specific failure: with the loss right, a
// scaled gradient (and its norm ratio) beats the grad norm it also moves.
TEST(ChecksParity, ScaledGradientIsReportedBeforeTheGradNorm) {
  std::vector<StepRecord> ref = {{1, 2.5, 2.4, 0.1, 3.0}};
  std::vector<StepRecord> run = ref;
  run[0].gradNorm = 2.9;  // moved by the halved expert gradient below
  at::Tensor g = at::arange(1, 7, at::kFloat).reshape({2, 3});
  io::MapTensorSource refGrads({{"experts.w", g}}, "reference grads");
  ParamShard shard;
  shard.name = "experts.w";
  shard.local = g * 0.5;
  shard.placements = {ref::Placement::replicate()};
  shard.globalShape = {2, 3};
  std::vector<ParamShard> grads = {shard};
  ParityInputs in;
  in.rank = 3;
  in.meshSizes = {1};
  in.meshCoords = {0};
  in.runSteps = &run;
  in.referenceSteps = &ref;
  in.step1Grads = &grads;
  in.referenceGrads = &refGrads;
  CheckResult r = checkParity(in);
  EXPECT_FALSE(r.passed);
  EXPECT_EQ(r.explanation.rfind("rank 3: step-1 gradient of experts.w: ", 0), 0u) << r.explanation;
  EXPECT_TRUE(has(r.explanation, "run/reference norm ratio 0.500")) << r.explanation;
  EXPECT_TRUE(has(r.explanation, "(also off: grad norm)")) << r.explanation;
  // A loss difference comes first: it is the forward's own effect.
  run[0].aux += 1e-3;
  r = checkParity(in);
  EXPECT_EQ(r.explanation.rfind("rank 3: step 1 aux ", 0), 0u) << r.explanation;
  EXPECT_TRUE(has(r.explanation, "(also off: step-1 gradients, grad norm)")) << r.explanation;
}

// The AdamW allowance, values derived by hand (fp32 defaults atol 1e-6,
// rtol 1e-4; lr 1e-3, eps 1e-8, 4 steps, no clipping):
//  - g = 0: eta = 1e-6, w = u(1e-6) - u(0) = 1e-6 / (1e-6 + 1e-8) = 0.990099,
//    allowance = 4 * 1e-3 * 0.990099 = 3.960396e-3;
//  - g = 1e-3: eta = 1e-6 + 1e-7; u(g + eta) - u(g) ~ eps * eta / g^2
//    = 1e-8 * 1.1e-6 / 1e-6 = 1.1e-8, allowance ~ 4.4e-11 (well conditioned);
//  - clip factor 0.5 on g = 0: eta' = 5e-7, w = 5e-7 / (5e-7 + 1e-8) = 0.980392.
TEST(ChecksParityMath, AdamwAllowanceFollowsTheUpdatesConditioning) {
  const ParityTolerance fp32 = ParityTolerance::forDtype("fp32");
  ParityOptimizer opt{1e-3, 1e-8, 1.0};
  at::Tensor g = at::tensor({0.0, 1e-3, -1e-3}, at::kDouble);
  at::Tensor a = adamwAllowance(g, fp32, opt, 4, 1.0);
  EXPECT_NEAR(a[0].item<double>(), 3.960396e-3, 1e-9);
  EXPECT_NEAR(a[1].item<double>(), 4.4e-11, 1e-12);
  EXPECT_NEAR(a[2].item<double>(), 4.4e-11, 1e-12);
  EXPECT_NEAR(adamwAllowance(g, fp32, opt, 4, 0.5)[0].item<double>(), 4 * 1e-3 * 0.980392, 1e-9);
  // No optimizer known: no allowance.
  EXPECT_EQ(adamwAllowance(g, fp32, ParityOptimizer{}, 4, 1.0).abs().max().item<double>(), 0.0);
}

// A well-conditioned element off by 1e-4 still fails with the allowance;
// the same difference on an element with a zero gradient passes.
TEST(ChecksParityMath, AllowanceExcusesOnlyIllConditionedElements) {
  const ParityTolerance fp32 = ParityTolerance::forDtype("fp32");
  at::Tensor ref = at::tensor({0.5, 0.5}, at::kDouble);
  at::Tensor grad = at::tensor({1e-3, 0.0}, at::kDouble);
  at::Tensor allowance = adamwAllowance(grad, fp32, ParityOptimizer{1e-3, 1e-8, 0}, 4, 1.0);
  at::Tensor run = ref.clone();
  run[0] = 0.5 + 1e-4;  // tolerance there: 1e-6 + 1e-4 * 0.5 = 5.1e-5, allowance 4.4e-11
  TensorDiff d = compareTensor(run, ref, fp32, nullptr, &allowance);
  EXPECT_FALSE(d.ok);
  EXPECT_TRUE(has(d.worstAt, "local [0]")) << d.worstAt;
  run = ref.clone();
  run[1] = 0.5 + 1e-4;  // the zero-gradient element: allowance 3.96e-3
  d = compareTensor(run, ref, fp32, nullptr, &allowance);
  EXPECT_TRUE(d.ok) << d.score;
  EXPECT_NEAR(d.allowanceAtWorst, 3.960396e-3, 1e-9);
  // Without the allowance the same difference fails.
  EXPECT_FALSE(compareTensor(run, ref, fp32).ok);
  // Beyond 4 steps of lr (what AdamW can move an element at all) it fails.
  run[1] = 0.5 + 5e-3;
  EXPECT_FALSE(compareTensor(run, ref, fp32, nullptr, &allowance).ok);
  // Relative norm: ||diff|| <= relNorm ||ref|| + ||allowance||.
  const ParityTolerance bf16 = ParityTolerance::forDtype("bf16");
  at::Tensor a2 = at::tensor({0.0, 0.01}, at::kDouble);
  run = ref.clone();
  run[0] = 0.5 + 0.02;  // ||diff|| = 0.02 > 0.02 * 0.7071 = 0.01414
  EXPECT_FALSE(compareTensor(run, ref, bf16).ok);
  EXPECT_TRUE(compareTensor(run, ref, bf16, nullptr, &a2).ok);  // 0.01414 + 0.01 >= 0.02
}

// Gradients of different experts summed (a reduction over a group mixing
// expert sets): the message names the expert, its partner and the values; a
// merely scaled expert gradient gets no such diagnosis.
TEST(ChecksParity, MixedExpertGradientsAreNamed) {
  std::vector<StepRecord> steps = {{1, 2.5, 2.4, 0.1, 3.0}};
  // 4 experts [4, 2, 3], value = f(expert, row, col); this rank holds
  // experts 2-3 (Shard(0) over a mesh dim of 2, coordinate 1).
  at::Tensor g = at::arange(24, at::kFloat).reshape({4, 2, 3}) * 0.25 - 2;
  io::MapTensorSource refGrads({{"experts.w", g}}, "reference grads");
  ParamShard shard;
  shard.name = "experts.w";
  shard.isExpert = true;
  shard.placements = {ref::Placement::shard(0)};
  shard.globalShape = {4, 2, 3};
  // Expert 2 right, expert 3 = experts 3 + 0 summed.
  shard.local = g.narrow(0, 2, 2).clone();
  shard.local[1] += g[0];
  std::vector<ParamShard> grads = {shard};
  ParityInputs in;
  in.rank = 1;
  in.meshSizes = {2};
  in.meshCoords = {1};
  in.runSteps = &steps;
  in.referenceSteps = &steps;
  in.step1Grads = &grads;
  in.referenceGrads = &refGrads;
  CheckResult r = checkParity(in);
  EXPECT_FALSE(r.passed);
  EXPECT_TRUE(has(r.explanation, "rank 1: step-1 gradient of experts.w: ")) << r.explanation;
  EXPECT_TRUE(has(r.explanation, "its expert 3 holds the reference's experts 3 + 0 summed (e.g. run "))
      << r.explanation;
  // Scaled instead: a failure without the diagnosis.
  grads[0].local = g.narrow(0, 2, 2) * 0.5;
  r = checkParity(in);
  EXPECT_FALSE(r.passed);
  EXPECT_FALSE(has(r.explanation, "summed")) << r.explanation;
  // Not an expert tensor: no diagnosis either.
  grads[0].local = g.narrow(0, 2, 2).clone();
  grads[0].local[1] += g[0];
  grads[0].isExpert = false;
  EXPECT_FALSE(has(checkParity(in).explanation, "summed"));
  // The pure helper on the correct shard: nothing to say.
  auto layout = ref::computeLayout({4, 2, 3}, {ref::Placement::shard(0)}, {2}, {1});
  EXPECT_EQ(mixedExpertsDiagnosis(g.narrow(0, 2, 2), layout, refGrads, "experts.w", ParityTolerance{}), "");
}

TEST(ChecksComm, DeltaExtraMissingAndBytes) {
  using comm::OpType;
  CommCounters before = {{{"tp", OpType::kAllReduce}, {3, 300, 300, 0}}};
  CommCounters after = {{{"tp", OpType::kAllReduce}, {5, 500, 500, 0}},
                        {{"ep", OpType::kAllToAll}, {2, 64, 64, 0}}};
  CommCounters d = counterDelta(before, after);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ((d[{"tp", OpType::kAllReduce}].calls), 2);
  EXPECT_EQ((d[{"tp", OpType::kAllReduce}].bytesSent), 200);

  std::vector<CommExpectation> want = {{"tp", OpType::kAllReduce, 1, 100, std::nullopt},
                                       {"ep", OpType::kAllToAll, 2, 32, std::nullopt}};
  CheckResult r = checkCommunication(0, d, want);
  EXPECT_FALSE(r.passed);
  EXPECT_EQ(r.explanation, "rank 0: extra collective: 2 all_reduce calls on group tp, expected 1");
  want[0].calls = 2;
  want[0].bytesSent = 200;
  r = checkCommunication(0, d, want);
  EXPECT_EQ(r.explanation, "rank 0: all_to_all on group ep sent 64 bytes, expected 32 (measured/expected 2.000)");
  EXPECT_EQ(r.measured["per_group_op"]["ep/all_to_all"]["ratio_bytes_sent"].get<double>(), 2.0);
  want[1].bytesSent = 64;
  EXPECT_TRUE(checkCommunication(0, d, want).passed);
  want.pop_back();
  EXPECT_EQ(checkCommunication(0, d, want).explanation,
            "rank 0: extra collective: 2 all_to_all calls on group ep, expected none");
  CommCheckOptions o;
  o.ignoreGroups = {"ep"};
  EXPECT_TRUE(checkCommunication(0, d, want, o).passed);
  want.push_back({"world", OpType::kBroadcast, 1, std::nullopt, std::nullopt});
  EXPECT_EQ(checkCommunication(0, d, want, o).explanation,
            "rank 0: missing collective: 0 broadcast calls on group world, expected 1");
  EXPECT_EQ(ringBytesSent(OpType::kAllReduce, 64, 2), 64);
  EXPECT_EQ(ringBytesSent(OpType::kAllGather, 64, 4), 48);
  EXPECT_EQ(ringBytesSent(OpType::kAllReduce, 64, 1), 0);
}

TEST(ChecksRegistry, EveryCheckIsRegisteredWithItsRunMetadata) {
  const CheckRegistry& reg = CheckRegistry::instance();
  // In report order: run-plan's results list them so.
  std::vector<std::string> names;
  for (const Check* c : checksInOrder()) names.push_back(c->name());
  EXPECT_EQ(names, (std::vector<std::string>{"placement", "expert_uniqueness", "zero3_partition", "finite", "parity",
                                             "resume_parity", "communication", "params_changed",
                                             "wrapper_communication", "gradient_scale", "checkpoint_complete",
                                             "fsdp_gather_volume", "memory", "measured_memory",
                                             "expected_placements"}));
  for (const Check* c : reg.all()) {
    EXPECT_FALSE(c->description().empty()) << c->name();
    EXPECT_FALSE(c->inputs().empty()) << c->name();
    EXPECT_FALSE(c->toleranceSource().empty()) << c->name();
    EXPECT_FALSE(stageName(c->stage()).empty()) << c->name();
  }
  EXPECT_EQ(reg.get("placement").stage(), CheckStage::kAfterLoad);
  EXPECT_EQ(reg.get("communication").stage(), CheckStage::kAfterStep1);
  EXPECT_EQ(reg.get("parity").stage(), CheckStage::kAfterLastStep);
  try {
    reg.get("uniqueness");
    FAIL() << "no error";
  } catch (const HarnessError& e) {
    EXPECT_TRUE(has(e.what(), "unknown check 'uniqueness' (known: checkpoint_complete, communication, "
                                    "expected_placements, expert_uniqueness, finite, fsdp_gather_volume, gradient_scale, "
                                    "measured_memory, memory, params_changed, parity, placement, resume_parity, "
                                    "wrapper_communication, zero3_partition)"))
        << e.what();
  }
  // A check run without its inputs names what is missing.
  CheckContext ctx;
  EXPECT_THROW(reg.get("parity").run(ctx), HarnessError);
  for (const Check* c : reg.all()) EXPECT_THROW(c->run(ctx), HarnessError) << c->name();
}

// Checks that concern only some runs decide from the context's data (what the
// store declares, what the run trained), never from a wrapper's name.
TEST(ChecksRegistry, AppliesFollowsTheRunsData) {
  const CheckRegistry& reg = CheckRegistry::instance();
  CheckContext ctx;
  std::vector<FlatPartition> none, some(1);
  std::vector<PlacementExpectation> expectations = {{"w", {}, std::nullopt, std::nullopt}};
  EXPECT_FALSE(reg.get("zero3_partition").applies(ctx));
  ctx.flatPartitions = &none;
  EXPECT_FALSE(reg.get("zero3_partition").applies(ctx));
  ctx.flatPartitions = &some;
  EXPECT_TRUE(reg.get("zero3_partition").applies(ctx));
  ctx.wrapper = "fsdp";  // a name alone decides nothing
  EXPECT_FALSE(reg.get("fsdp_gather_volume").applies(ctx));
  ctx.steps = 1;
  ctx.parameterGatherPrefix = "mystore:";
  EXPECT_TRUE(reg.get("fsdp_gather_volume").applies(ctx));
  EXPECT_FALSE(reg.get("expected_placements").applies(ctx));
  ctx.expectedPlacements = &expectations;
  EXPECT_TRUE(reg.get("expected_placements").applies(ctx));
  ctx.steps = 0;
  EXPECT_FALSE(reg.get("params_changed").applies(ctx));
  EXPECT_TRUE(reg.get("parity").applies(ctx));
}

}  // namespace
}  // namespace moe::checks
