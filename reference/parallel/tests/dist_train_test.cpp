// End-to-end distributed training on real gloo ranks against the
// single-device reference trainer (reference/train), which every rank runs
// itself on the tiny model (an independent code path: no plan, no
// collectives). Compared per the design's parity rules:
//  - per step: loss, ce, aux, grad norm;
//  - after step 1: every parameter's local gradient shard vs the matching
//    slice of the reference gradient (slice from computeLayout);
//  - after the last step: every local parameter shard.
// fp32 tolerances: loss |d| <= 1e-5, allclose(rtol 1e-4, atol 1e-6);
// bf16: loss |d| <= 5e-3, relative norm error <= 2e-2 per WHOLE tensor
// (harness/checks' collective parity check sums every rank's pieces; the
// local pieces' errors are printed too).
// The measured maxima are printed for every configuration.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>
#include <iomanip>
#include <iostream>

#include "harness/checks/parity_check.h"
#include "harness/comm/flight_recorder.h"
#include "common/error.h"
#include "harness/mesh/device_mesh.h"
#include "harness/tests/rank_test_util.h"
#include "reference/io/tensor_source.h"
#include "reference/model/family.h"
#include "reference/model/init.h"
#include "reference/parallel/dist_model.h"
#include "reference/parallel/tests/test_plans.h"
#include "reference/placement/dist_tensor.h"
#include "reference/placement/layout.h"
#include "reference/train/trainer.h"

namespace moe::parallel {
namespace {

ref::ModelConfig tinyMoe(int64_t numExperts) {
  auto c = ref::tinyTestConfig();
  c.vocabSize = 32;
  c.hiddenSize = 32;
  c.intermediateSize = 32;
  c.moeIntermediateSize = 16;
  c.numHiddenLayers = 3;
  c.mlpOnlyLayers = {0};  // layer 0 dense, layers 1-2 MoE
  c.numAttentionHeads = 4;
  c.numKeyValueHeads = 2;
  c.headDim = 8;
  c.numExperts = numExperts;
  c.numExpertsPerTok = 2;
  c.normTopkProb = true;
  c.routerAuxLossCoef = 0.01;
  c.validate();
  return c;
}

// The same sizes as a mixtral config: every layer MoE with experts of width
// 16, no q/k norms, the fp32 combine (reference/model/family.h traits).
ref::ModelConfig tinyMixtral(int64_t numExperts) {
  auto c = tinyMoe(numExperts);
  c.modelType = "mixtral";
  c.intermediateSize = c.moeIntermediateSize;
  c.mlpOnlyLayers.clear();
  c.validate();
  return c;
}

// gpt_oss at the same sizes: every layer MoE (experts of width 16, with
// biases), sliding / full / sliding attention with window 3 over 8
// positions, sinks and attention biases, router bias, the clamped SwiGLU
// with GptOssConfig's default limit 7.0. The active clamp (limit 0.05) is
// run by the gpt_oss_* cases, whose parity check carries the derived AdamW
// allowance for parameters; here, with 0.05, every step-1 gradient of Tp2 /
// Ep2Tp2 fp32 is within 5e-7 relative but the final
// layers.1.mlp.experts.gate_up_proj is 1.58e-6 off (> atol 1e-6): the clamp
// zeroes most of its gradient, and Adam turns the last-bit differences of
// the near-zero remainder into steps of up to lr (see runE2E's note).
ref::ModelConfig tinyGptOss(int64_t numExperts) {
  auto c = tinyMixtral(numExperts);
  c.modelType = "gpt_oss";
  c.layerTypes = {"sliding_attention", "full_attention", "sliding_attention"};
  c.slidingWindow = 3;
  c.swigluAlpha = 1.702;
  c.swigluLimit = 7.0;
  c.validate();
  return c;
}

using testing::joinPlans;
using testing::kGptOssEpPlan;
using testing::kGptOssTpPlan;
using testing::kEpPlan;
using testing::kMixtralTpPlan;
using testing::kSpEntries;
using testing::kTpPlan;

struct E2ECase {
  std::vector<mesh::MeshDim> mesh;
  std::string plan;
  int64_t numExperts = 8;
  ref::Precision precision = ref::Precision::kFp32;
  int64_t steps = 3;
  std::string expertsImplementation = "grouped";
  std::string modelType = "qwen3_moe";
};

ref::ModelConfig configOf(const E2ECase& c) {
  if (c.modelType == "deepseek_v3") {  // reference/model/family.h; the bias rule on, visibly
    auto d = ref::tinyDeepseekV3TestConfig();
    // bf16: 1e-5, as the bf16 cases (one token's routing flip is a 2 x speed
    // jump of a bias element; cases/deepseek_v3_ep2_bf16.json derives it).
    d.biasUpdateSpeed = c.precision == ref::Precision::kFp32 ? 0.01 : 1e-5;
    d.expertsImplementation = c.expertsImplementation;
    return d;
  }
  auto cfg = c.modelType == "mixtral"   ? tinyMixtral(c.numExperts)
             : c.modelType == "gpt_oss" ? tinyGptOss(c.numExperts)
                                        : tinyMoe(c.numExperts);
  cfg.expertsImplementation = c.expertsImplementation;
  return cfg;
}

struct Diffs {
  double maxAbs = 0;
  double maxRelNorm = 0;
  std::string worst;
  bool ok = true;
  std::string firstFailure;
};

void compare(Diffs& d, const std::string& what, const torch::Tensor& got, const torch::Tensor& want,
             ref::Precision prec) {
  auto g = got.to(torch::kDouble), w = want.to(torch::kDouble);
  if (g.sizes() != w.sizes()) {
    d.ok = false;
    if (d.firstFailure.empty())
      d.firstFailure = moe::str(what, ": local shape ", got.sizes(), " vs expected ", want.sizes());
    return;
  }
  if (g.numel() == 0) return;
  const double abs = (g - w).abs().max().item<double>();
  const double wn = w.norm().item<double>();
  const double rel = (g - w).norm().item<double>() / std::max(wn, 1e-12);
  if (abs > d.maxAbs) {
    d.maxAbs = abs;
    d.worst = what;
  }
  d.maxRelNorm = std::max(d.maxRelNorm, wn > 1e-12 ? rel : 0.0);
  // bf16's relative norm is judged on the whole tensor (see runE2E).
  bool ok = prec == ref::Precision::kFp32 ? torch::allclose(g, w, 1e-4, 1e-6) : true;
  if (!ok && std::getenv("MOE_PARITY_VERBOSE"))
    std::cout << "  " << what << ": max |diff| " << abs << ", rel norm err " << rel << std::endl;
  if (!ok) {
    d.ok = false;
    if (d.firstFailure.empty())
      d.firstFailure = moe::str(what, ": max |diff| ", abs, ", rel norm err ", rel);
  }
}

int runE2E(const E2ECase& c) {
  auto world = ranktest::rankWorld();
  mesh::DeviceMesh mesh(world, c.mesh);
  const int rank = world->rank();
  auto cfg = configOf(c);
  ref::TrainOptions opts;
  opts.steps = c.steps;
  opts.precision = c.precision;
  opts.seed = std::getenv("MOE_E2E_SEED") ? std::stoull(std::getenv("MOE_E2E_SEED")) : 7;
  opts.batchSize = 4;
  opts.seqLen = 8;
  // AdamW defaults (lr 1e-3), as the runner uses. Adam maps an element's
  // gradient to ~sign(g) once |g| >> eps, so elements whose gradient is near
  // zero amplify last-bit gradient differences by lr; a larger lr makes the
  // fp32 param tolerance (atol 1e-6) unreachable for any reduction order.

  auto init = ref::initParameters(cfg, opts.seed);
  auto reference = ref::train(cfg, init, opts);

  auto applied = plan::applyPlan(plan::Plan::parse(c.plan), cfg, mesh.shape());
  auto local = distributeParams(applied, mesh, init);
  DistTrainer trainer(cfg, mesh, applied, local, opts);
  const double lossTol = c.precision == ref::Precision::kFp32 ? 1e-5 : 5e-3;
  double maxLoss = 0, maxCe = 0, maxAux = 0, maxNorm = 0;
  Diffs grads, params;
  std::vector<checks::ParamShard> gradShards1;
  for (int64_t s = 1; s <= c.steps; ++s) {
    auto rec = trainer.step();
    const auto& want = reference.steps[s - 1];
    maxLoss = std::max(maxLoss, std::abs(rec.loss - want.loss));
    maxCe = std::max(maxCe, std::abs(rec.ce - want.ce));
    maxAux = std::max(maxAux, std::abs(rec.aux - want.aux));
    maxNorm = std::max(maxNorm, std::abs(rec.gradNorm - want.gradNorm) / std::max(want.gradNorm, 1e-12));
    RANK_CHECK(std::abs(rec.loss - want.loss) <= lossTol, "rank ", rank, " step ", s, ": loss ",
               rec.loss, " vs reference ", want.loss);
    if (s == 1) {
      gradShards1 = trainer.gradShards();
      for (const auto& sh : gradShards1) {
        auto layout = ref::computeLayout(sh.globalShape, sh.placements, ref::meshSizes(mesh),
                                         mesh.coords());
        compare(grads, "grad " + sh.name, sh.local,
                ref::sliceLocal(ref::getParam(reference.gradsStep1, sh.name), layout), c.precision);
      }
    }
  }
  for (const auto& sh : trainer.paramShards()) {
    auto layout =
        ref::computeLayout(sh.globalShape, sh.placements, ref::meshSizes(mesh), mesh.coords());
    compare(params, "param " + sh.name, sh.local,
            ref::sliceLocal(ref::getParam(reference.finalParams, sh.name), layout), c.precision);
  }
  std::cout << std::setprecision(3) << "rank " << rank << " " << c.modelType << " "
            << mesh::DeviceMesh::describe(c.mesh)
            << " " << ref::precisionName(c.precision) << " " << c.expertsImplementation
            << ": max |d loss| " << maxLoss << " |d ce| " << maxCe << " |d aux| " << maxAux
            << " rel d gradnorm " << maxNorm << "; grads max|d| " << grads.maxAbs << " (rel norm "
            << grads.maxRelNorm << ", " << grads.worst << "); params max|d| " << params.maxAbs
            << " (rel norm " << params.maxRelNorm << ")" << std::endl;
  if (c.precision == ref::Precision::kBf16) {
    // The relative norm error over each whole tensor: the collective check.
    std::map<std::string, at::Tensor> refGrads, refParams;
    for (const auto& kv : reference.gradsStep1) refGrads[kv.key()] = kv.value();
    for (const auto& kv : reference.finalParams) refParams[kv.key()] = kv.value();
    io::MapTensorSource refGradSrc(refGrads, "reference step-1 gradients"),
        refParamSrc(refParams, "reference final parameters");
    std::vector<checks::StepRecord> none;
    const auto grads1 = gradShards1, finals = trainer.paramShards();
    checks::ParityInputs in;
    in.rank = rank;
    in.meshSizes = ref::meshSizes(mesh);
    in.meshCoords = mesh.coords();
    in.runSteps = in.referenceSteps = &none;  // steps are compared above
    in.step1Grads = &grads1;
    in.referenceGrads = &refGradSrc;
    in.finalParams = &finals;
    in.referenceParams = &refParamSrc;
    checks::ParityCheckOptions po;
    po.dtype = "bf16";
    auto r = checks::checkParityCollective(*world, in, po);
    std::cout << "rank " << rank << " bf16 whole-tensor relative norm error max "
              << r.measured.value("max_whole_tensor_rel_norm_error", -1.0) << ": " << r.explanation << std::endl;
    RANK_CHECK(r.passed, r.explanation);
  }
  RANK_CHECK(grads.ok, "rank ", rank, ": ", grads.firstFailure);
  RANK_CHECK(params.ok, "rank ", rank, ": ", params.firstFailure);
  // The styles really communicated: SP reduce-scatters over tp, EP
  // dispatches with all_to_all over ep (not a silent replicated fallback).
  auto& fr = comm::FlightRecorder::instance();
  const std::string tpGroup = mesh.comm("tp")->name(), epGroup = mesh.comm("ep")->name();
  if (c.plan.find("sequence_parallel") != std::string::npos)
    RANK_CHECK(fr.counter(tpGroup, comm::OpType::kReduceScatter).calls > 0, "rank ", rank,
               ": sequence parallel issued no reduce_scatter on ", tpGroup);
  if (c.plan.find("ep_router") != std::string::npos && mesh.size("ep") > 1)
    RANK_CHECK(fr.counter(epGroup, comm::OpType::kAllToAll).calls > 0, "rank ", rank,
               ": expert parallelism issued no all_to_all on ", epGroup);
  const double normTol = c.precision == ref::Precision::kFp32 ? 1e-4 : 2e-2;
  RANK_CHECK(maxNorm <= normTol, "rank ", rank, ": grad norm rel diff ", maxNorm);
  return 0;
}

void expectRun(int n, const E2ECase& c) {
  auto r = ranktest::runRanks(n, [c](const launch::RankContext&) { return runE2E(c); }, 120);
  std::cout << r.out;
  ASSERT_TRUE(r.result.ok) << r.all();
}

TEST(DistTrainGloo, Ep2) { expectRun(2, {{{"ep", 2}}, kEpPlan}); }
TEST(DistTrainGloo, Ep2LoopExperts) {
  E2ECase c{{{"ep", 2}}, kEpPlan};
  c.expertsImplementation = "loop";
  c.steps = 2;
  expectRun(2, c);
}
TEST(DistTrainGloo, Ep4) { expectRun(4, {{{"ep", 4}}, kEpPlan}); }
TEST(DistTrainGloo, Ep3SixExperts) { expectRun(3, {{{"ep", 3}}, kEpPlan, /*numExperts=*/6}); }
TEST(DistTrainGloo, Tp2) { expectRun(2, {{{"tp", 2}}, kTpPlan}); }
TEST(DistTrainGloo, Tp2SequenceParallel) {
  expectRun(2, {{{"tp", 2}}, joinPlans({kTpPlan, kSpEntries})});
}
TEST(DistTrainGloo, Ep2Tp2) { expectRun(4, {{{"ep", 2}, {"tp", 2}}, joinPlans({kEpPlan, kTpPlan})}); }
TEST(DistTrainGloo, Dp2Ep2) {
  expectRun(4, {{{"dp", 2}, {"ep", 2}}, kEpPlan});
}
TEST(DistTrainGloo, Ep2Tp2SequenceParallel) {
  expectRun(4, {{{"ep", 2}, {"tp", 2}}, joinPlans({kEpPlan, kTpPlan, kSpEntries})});
}
TEST(DistTrainGloo, Ep2Bf16) {
  E2ECase c{{{"ep", 2}}, kEpPlan};
  c.precision = ref::Precision::kBf16;
  expectRun(2, c);
}
// bf16 under tensor parallelism: tp modules keep their partial sums in fp32
// (reference/model/partial_sums.h) and norm weights get fp32 gradients, so
// the run rounds where the single-device run does.
TEST(DistTrainGloo, Tp2Bf16) {
  E2ECase c{{{"tp", 2}}, kTpPlan};
  c.precision = ref::Precision::kBf16;
  expectRun(2, c);
}

TEST(DistTrainGloo, Tp2SequenceParallelBf16) {
  E2ECase c{{{"tp", 2}}, joinPlans({kTpPlan, kSpEntries})};
  c.precision = ref::Precision::kBf16;
  expectRun(2, c);
}
TEST(DistTrainGloo, Ep2Tp2Bf16) {
  E2ECase c{{{"ep", 2}, {"tp", 2}}, joinPlans({kEpPlan, kTpPlan})};
  c.precision = ref::Precision::kBf16;
  expectRun(4, c);
}
TEST(DistTrainGloo, Ep3SixExpertsBf16) {
  E2ECase c{{{"ep", 3}}, kEpPlan, /*numExperts=*/6};
  c.precision = ref::Precision::kBf16;
  expectRun(3, c);
}

// --- Mixtral: the family's traits in the distributed model ---------------
// (no q/k norms: the model must not fetch them; the fp32 combine in every
// combine: single rank, MoE tensor parallelism, EP dispatch)

// One rank, every region and expert module local: the distributed step
// (attention without q/k norms, the family's combine) must compute what the
// single-device trainer does: loss, every step-1 gradient and every final
// parameter, each judged on its relative norm error, to rounding.
int runOneRankMatchesSingleDevice(ref::Precision precision, const std::string& impl, double tol,
                                  const std::string& family = "mixtral") {
  auto world = ranktest::rankWorld();
  mesh::DeviceMesh mesh(world, {{"tp", 1}});
  E2ECase c{{{"tp", 1}}, family == "gpt_oss" ? kGptOssTpPlan : kMixtralTpPlan};
  c.modelType = family;
  c.expertsImplementation = impl;
  auto cfg = configOf(c);
  ref::TrainOptions opts;
  opts.steps = 2;
  opts.precision = precision;
  opts.seed = 11;
  opts.batchSize = 4;
  opts.seqLen = 8;
  auto init = ref::initParameters(cfg, opts.seed);
  auto reference = ref::train(cfg, init, opts);
  auto applied = plan::applyPlan(plan::Plan::parse(c.plan), cfg, mesh.shape());
  for (const auto& pp : applied.params)
    RANK_CHECK(pp.name.find("_norm.") == std::string::npos || pp.name.find("self_attn") == std::string::npos,
               family, " plan holds a q/k norm parameter: ", pp.name);
  DistTrainer trainer(cfg, mesh, applied, distributeParams(applied, mesh, init), opts);
  double worstLoss = 0, worstGrad = 0, worstParam = 0;
  std::string worstGradName;
  auto relErr = [](const torch::Tensor& got, const torch::Tensor& want) {
    auto g = got.to(torch::kDouble), w = want.to(torch::kDouble);
    return (g - w).norm().item<double>() / std::max(w.norm().item<double>(), 1e-30);
  };
  for (int64_t s = 1; s <= opts.steps; ++s) {
    auto rec = trainer.step();
    worstLoss = std::max(worstLoss, std::abs(rec.loss - reference.steps[s - 1].loss));
    if (s == 1)
      for (const auto& sh : trainer.gradShards()) {
        const double e = relErr(sh.local, ref::getParam(reference.gradsStep1, sh.name));
        if (e >= worstGrad) {
          worstGrad = e;
          worstGradName = sh.name;
        }
      }
  }
  for (const auto& sh : trainer.paramShards())
    worstParam = std::max(worstParam, relErr(sh.local, ref::getParam(reference.finalParams, sh.name)));
  std::cout << family << " 1 rank " << ref::precisionName(precision) << " " << impl << ": |d loss| " << worstLoss
            << ", worst step-1 gradient rel norm error " << worstGrad << " (" << worstGradName
            << "), worst final parameter " << worstParam << " (tolerance " << tol << ")" << std::endl;
  RANK_CHECK(worstLoss <= tol && worstGrad <= tol && worstParam <= tol, family, " on one rank differs from the ",
             "single-device run: |d loss| ", worstLoss, ", gradient ", worstGradName, " rel err ", worstGrad,
             ", parameters ", worstParam, " (tolerance ", tol, ")");
  return 0;
}

// Measured (libtorch 2.15, CPU): loss and step-1 gradients bit-identical
// in fp32 and bf16, final parameters within 2e-8. Ignoring the family's
// fp32 combine (the Qwen rounding) moves the bf16 loss by 4e-5, the worst
// gradient by 1e-2 and the parameters by 5e-3: far beyond this tolerance,
// and within the bf16 case tolerances (loss 5e-3, rel_norm 2e-2), which is
// why the trait is judged here on one rank.
constexpr double kBf16OneRankTol = 1e-6;

void expectOneRank(ref::Precision precision, const std::string& impl, double tol,
                   const std::string& family = "mixtral") {
  auto r = ranktest::runRanks(
      1, [=](const launch::RankContext&) { return runOneRankMatchesSingleDevice(precision, impl, tol, family); },
      120);
  std::cout << r.out;
  ASSERT_TRUE(r.result.ok) << r.all();
}

TEST(DistTrainMixtral, OneRankEqualsSingleDeviceFp32) { expectOneRank(ref::Precision::kFp32, "grouped", 1e-6); }
TEST(DistTrainMixtral, OneRankEqualsSingleDeviceBf16) { expectOneRank(ref::Precision::kBf16, "grouped", kBf16OneRankTol); }
TEST(DistTrainMixtral, OneRankEqualsSingleDeviceBf16Loop) { expectOneRank(ref::Precision::kBf16, "loop", kBf16OneRankTol); }

E2ECase mixtral(std::vector<mesh::MeshDim> m, std::string plan, ref::Precision p = ref::Precision::kFp32,
                std::string impl = "grouped") {
  E2ECase c{std::move(m), std::move(plan)};
  c.modelType = "mixtral";
  c.precision = p;
  c.expertsImplementation = std::move(impl);
  return c;
}
TEST(DistTrainMixtral, Ep2) { expectRun(2, mixtral({{"ep", 2}}, kEpPlan)); }
TEST(DistTrainMixtral, Tp2) { expectRun(2, mixtral({{"tp", 2}}, kMixtralTpPlan)); }
TEST(DistTrainMixtral, Tp2SequenceParallelLoop) {
  expectRun(2, mixtral({{"tp", 2}}, joinPlans({kMixtralTpPlan, kSpEntries}), ref::Precision::kFp32, "loop"));
}
TEST(DistTrainMixtral, Ep2Bf16) { expectRun(2, mixtral({{"ep", 2}}, kEpPlan, ref::Precision::kBf16)); }
TEST(DistTrainMixtral, Tp2Bf16) { expectRun(2, mixtral({{"tp", 2}}, kMixtralTpPlan, ref::Precision::kBf16)); }
TEST(DistTrainMixtral, Tp2LoopBf16) {
  expectRun(2, mixtral({{"tp", 2}}, kMixtralTpPlan, ref::Precision::kBf16, "loop"));
}
TEST(DistTrainMixtral, Ep2Tp2Bf16) {
  expectRun(4, mixtral({{"ep", 2}, {"tp", 2}}, joinPlans({kEpPlan, kMixtralTpPlan}), ref::Precision::kBf16));
}

// --- deepseek_v3: latent attention, shared experts, the bias rule ---------
// (tinyDeepseekV3TestConfig, bias_update_speed 0.01: final parameters
// include every correction bias, moved by 3 steps of the rule.)
const char* kDeepseekTpPlan = R"([
  ["model.layers.*.self_attn.q_b_proj", "mla_colwise"],
  ["model.layers.*.self_attn.kv_b_proj", "mla_colwise"],
  ["model.layers.*.self_attn.o_proj", "mla_rowwise"],
  ["model.layers.*.mlp.gate_proj", "colwise"],
  ["model.layers.*.mlp.up_proj", "colwise"],
  ["model.layers.*.mlp.down_proj", "rowwise"],
  ["model.layers.*.mlp.shared_experts.gate_proj", "colwise"],
  ["model.layers.*.mlp.shared_experts.up_proj", "colwise"],
  ["model.layers.*.mlp.shared_experts.down_proj", "rowwise"],
  ["model.layers.*.mlp.experts.gate_up_proj", "moe_tp_gate_up_colwise"],
  ["model.layers.*.mlp.experts.down_proj", "moe_tp_down_rowwise"],
  ["model.layers.*.mlp.experts", "moe_experts_allreduce"]])";
E2ECase deepseek(std::vector<mesh::MeshDim> m, std::string plan, ref::Precision p = ref::Precision::kFp32,
                 std::string impl = "grouped") {
  E2ECase c{std::move(m), std::move(plan)};
  c.modelType = "deepseek_v3";
  c.precision = p;
  c.expertsImplementation = std::move(impl);
  return c;
}
TEST(DistTrainDeepseekV3, OneRank) { expectRun(1, deepseek({{"tp", 1}}, kDeepseekTpPlan)); }
TEST(DistTrainDeepseekV3, OneRankBf16) {
  expectRun(1, deepseek({{"tp", 1}}, kDeepseekTpPlan, ref::Precision::kBf16));
}
TEST(DistTrainDeepseekV3, Ep2) { expectRun(2, deepseek({{"ep", 2}}, kEpPlan)); }
TEST(DistTrainDeepseekV3, Dp2Ep2) { expectRun(4, deepseek({{"dp", 2}, {"ep", 2}}, kEpPlan)); }
TEST(DistTrainDeepseekV3, Tp2) { expectRun(2, deepseek({{"tp", 2}}, kDeepseekTpPlan)); }
TEST(DistTrainDeepseekV3, Tp2SequenceParallel) {
  expectRun(2, deepseek({{"tp", 2}}, joinPlans({kDeepseekTpPlan, kSpEntries})));
}
TEST(DistTrainDeepseekV3, Ep2Tp2) { expectRun(4, deepseek({{"ep", 2}, {"tp", 2}}, joinPlans({kEpPlan, kDeepseekTpPlan}))); }
TEST(DistTrainDeepseekV3, Ep2Bf16) { expectRun(2, deepseek({{"ep", 2}}, kEpPlan, ref::Precision::kBf16)); }
TEST(DistTrainDeepseekV3, Tp2Bf16) { expectRun(2, deepseek({{"tp", 2}}, kDeepseekTpPlan, ref::Precision::kBf16)); }
// fsdp and zero3 cannot hand out the correction biases' masters: refused
// when the trainer is built, naming the wrapper and the bias, on every rank.
TEST(DistTrainDeepseekV3, ShardingWrappersAreRefusedBeforeTheFirstStep) {
  for (const char* wrapper : {"fsdp", "zero3"}) {
    auto r = ranktest::runRanks(2, [wrapper](const launch::RankContext&) {
      auto world = ranktest::rankWorld();
      mesh::DeviceMesh mesh(world, {{"dp", 2}});
      auto cfg = configOf(deepseek({{"dp", 2}}, "[]"));
      ref::TrainOptions opts;
      opts.steps = 1;
      auto applied = plan::applyPlan(plan::Plan::parse("[]"), cfg, mesh.shape());
      auto local = distributeParams(applied, mesh, ref::initParameters(cfg, 7));
      DistOptions d;
      d.wrapper = wrapper;
      try {
        DistTrainer trainer(cfg, mesh, applied, local, opts, d);
      } catch (const HarnessError& e) {
        const std::string m = e.what();
        RANK_CHECK(m.find(std::string("wrapper '") + wrapper + "'") != std::string::npos &&
                       m.find("e_score_correction_bias") != std::string::npos,
                   "rank ", world->rank(), ": message ", m);
        return 0;
      }
      RANK_CHECK(false, "rank ", world->rank(), ": wrapper ", wrapper, " was not refused");
      return 0;
    }, 120);
    ASSERT_TRUE(r.result.ok) << wrapper << ": " << r.all();
  }
}
TEST(DistTrainDeepseekV3, Ep2Loop) { expectRun(2, deepseek({{"ep", 2}}, kEpPlan, ref::Precision::kFp32, "loop")); }

// --- gpt_oss: its attention (sinks, biases, windows), router with bias and
// interleaved experts with biases in the distributed model -------------------
// One rank with every tp style applied (tp = 1): the distributed step must
// compute what the single-device trainer does. Measured (libtorch 2.15,
// CPU): loss, step-1 gradients and final parameters bit-identical in fp32
// and bf16. Ep2 / Tp2 / Ep2Tp2 (seed 7, 3 steps): fp32 gradients within
// 5.2e-7 relative, parameters 7.4e-7; bf16 Ep2 within 7.6e-8, Tp2 and
// Ep2Tp2 loss 1.1e-4, worst gradient k_proj.bias 9.7e-3 (the near-zero
// gradient of docs/families.md), whole-tensor maximum 1.71e-2 of the 2e-2
// tolerance.
TEST(DistTrainGptOss, OneRankEqualsSingleDeviceFp32) {
  expectOneRank(ref::Precision::kFp32, "grouped", 1e-6, "gpt_oss");
}
TEST(DistTrainGptOss, OneRankEqualsSingleDeviceBf16) {
  expectOneRank(ref::Precision::kBf16, "grouped", kBf16OneRankTol, "gpt_oss");
}

E2ECase gptOss(std::vector<mesh::MeshDim> m, std::string plan, ref::Precision p = ref::Precision::kFp32) {
  E2ECase c{std::move(m), std::move(plan)};
  c.modelType = "gpt_oss";
  c.precision = p;
  return c;
}
TEST(DistTrainGptOss, Ep2) { expectRun(2, gptOss({{"ep", 2}}, kGptOssEpPlan)); }
TEST(DistTrainGptOss, Tp2) { expectRun(2, gptOss({{"tp", 2}}, kGptOssTpPlan)); }
TEST(DistTrainGptOss, Ep2Tp2) { expectRun(4, gptOss({{"ep", 2}, {"tp", 2}}, joinPlans({kGptOssEpPlan, kGptOssTpPlan}))); }
TEST(DistTrainGptOss, Ep2Bf16) { expectRun(2, gptOss({{"ep", 2}}, kGptOssEpPlan, ref::Precision::kBf16)); }
TEST(DistTrainGptOss, Tp2Bf16) { expectRun(2, gptOss({{"tp", 2}}, kGptOssTpPlan, ref::Precision::kBf16)); }
TEST(DistTrainGptOss, Ep2Tp2Bf16) {
  expectRun(4, gptOss({{"ep", 2}, {"tp", 2}}, joinPlans({kGptOssEpPlan, kGptOssTpPlan}), ref::Precision::kBf16));
}

}  // namespace
}  // namespace moe::parallel
