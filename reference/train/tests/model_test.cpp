// Reference model tests: parameter layout, deterministic init, gradients vs
// finite differences, loop vs grouped experts, loss pieces vs hand loops.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "common/error.h"
#include "kernels/permute.h"
#include "reference/model/config.h"
#include "reference/model/init.h"
#include "reference/model/moe_block.h"
#include "reference/model/qwen3_moe.h"
#include "reference/train/synthetic_data.h"

namespace moe::ref {
namespace {

const bool kOneThreadInModelTests = [] {
  at::set_num_threads(1);
  return true;
}();

ModelConfig sharedTiedConfig() {
  auto c = tinyTestConfig();
  c.sharedExpertIntermediateSize = 12;
  c.tieWordEmbeddings = true;
  c.normTopkProb = false;
  c.expertsImplementation = "loop";
  c.validate();
  return c;
}

TEST(Params, HuggingFaceNamesAndShapes) {
  auto specs = parameterSpecs(sharedTiedConfig());
  std::map<std::string, std::vector<int64_t>> byName;
  for (const auto& s : specs) byName[s.name] = s.shape;
  EXPECT_EQ(specs.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(specs.back().name, "model.norm.weight");  // tied: no lm_head.weight
  EXPECT_EQ(byName.count("lm_head.weight"), 0u);
  EXPECT_EQ(byName.at("model.layers.0.mlp.gate_proj.weight"), (std::vector<int64_t>{24, 16}));
  EXPECT_EQ(byName.at("model.layers.0.self_attn.q_proj.weight"), (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(byName.at("model.layers.0.self_attn.k_proj.weight"), (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(byName.at("model.layers.0.self_attn.q_norm.weight"), (std::vector<int64_t>{8}));
  EXPECT_EQ(byName.at("model.layers.1.mlp.gate.weight"), (std::vector<int64_t>{4, 16}));
  EXPECT_EQ(byName.at("model.layers.1.mlp.experts.gate_up_proj"), (std::vector<int64_t>{4, 16, 16}));
  EXPECT_EQ(byName.at("model.layers.1.mlp.experts.down_proj"), (std::vector<int64_t>{4, 16, 8}));
  EXPECT_EQ(byName.at("model.layers.1.mlp.shared_expert_gate.weight"), (std::vector<int64_t>{1, 16}));
  EXPECT_EQ(byName.at("model.layers.1.post_attention_layernorm.weight"), (std::vector<int64_t>{16}));
  EXPECT_EQ(byName.count("model.layers.1.mlp.gate_proj.weight"), 0u);
  EXPECT_EQ(parameterSpecs(tinyTestConfig()).back().name, "lm_head.weight");
}

TEST(Init, SliceEqualsSliceOfFullAndIsStable) {
  const std::vector<int64_t> shape{4, 16, 16};
  const std::string name = "model.layers.1.mlp.experts.gate_up_proj";
  auto full = initParameter(name, shape, /*seed=*/7);
  auto slice = materializeSlice(name, shape, {{1, 3}, {4, 12}, {0, 16}}, 7);
  EXPECT_TRUE(torch::equal(slice, full.narrow(0, 1, 2).narrow(1, 4, 8)));
  EXPECT_TRUE(torch::equal(materializeSlice(name, shape, {{2, 2}}, 7), full.narrow(0, 2, 0)));
  EXPECT_TRUE(torch::equal(full, initParameter(name, shape, 7)));
  EXPECT_FALSE(torch::equal(full, initParameter(name, shape, 8)));
  EXPECT_FALSE(torch::equal(full, initParameter("model.layers.0.mlp.experts.gate_up_proj", shape, 7)));
  EXPECT_NEAR(full.std().item<double>(), kInitStd, 0.003);
  EXPECT_NEAR(full.mean().item<double>(), 0.0, 0.003);
  EXPECT_TRUE(torch::equal(initParameter("model.norm.weight", {16}, 7), torch::ones({16})));
  EXPECT_THROW(materializeSlice(name, shape, {{0, 5}}, 7), HarnessError);
  // The stable hash is FNV-1a: pinned values guard against accidental changes.
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
}

TEST(Data, DeterministicArithmeticRows) {
  BatchOptions o{/*batchSize=*/3, /*seqLen=*/10, /*vocabSize=*/32, /*seed=*/5};
  auto a = syntheticBatch(o, 1);
  EXPECT_TRUE(torch::equal(a, syntheticBatch(o, 1)));
  EXPECT_FALSE(torch::equal(a, syntheticBatch(o, 2)));
  for (int64_t r = 0; r < 3; ++r) {
    int64_t stride = (a[r][1].item<int64_t>() - a[r][0].item<int64_t>() + 32) % 32;
    EXPECT_GE(stride, 1);
    EXPECT_LE(stride, kMaxStride);
    for (int64_t t = 1; t < 10; ++t)
      EXPECT_EQ(a[r][t].item<int64_t>(), (a[r][t - 1].item<int64_t>() + stride) % 32);
  }
}

// Gradient of the whole loss (CE + coef * aux) in float64 vs central finite
// differences on a sample of coordinates of every parameter.
void checkGradientsAgainstFiniteDifferences(const ModelConfig& config) {
  auto params = cloneParams(initParameters(config, /*seed=*/11), torch::kDouble);
  // Larger weights than the 0.02 init so every path carries signal.
  for (auto& item : params) {
    if (item.key().find("norm.weight") == std::string::npos) item.value().mul_(10.0);
    else item.value().add_(torch::linspace(-0.3, 0.3, item.value().numel(), torch::kDouble));
  }
  auto ids = syntheticBatch({/*batchSize=*/2, /*seqLen=*/6, config.vocabSize, /*seed=*/3}, 1);
  auto lossOf = [&](const ParamMap& p) {
    auto out = forwardModel(config, p, ids, {torch::kDouble});
    return computeLoss(config, out, ids);
  };
  for (auto& item : params) item.value().requires_grad_(true);
  auto parts = lossOf(params);
  ASSERT_GT(parts.aux.item<double>(), 0.0);
  parts.loss.backward();

  torch::NoGradGuard noGrad;
  const double h = 1e-5;
  std::vector<double> analytic, numeric;
  uint64_t pick = 1;
  for (auto& item : params) {
    auto p = item.value();
    auto flat = p.view(-1);
    for (int s = 0; s < 4; ++s) {
      pick = splitmix64(pick);
      const int64_t i = static_cast<int64_t>(pick % static_cast<uint64_t>(flat.numel()));
      const double orig = flat[i].item<double>();
      flat[i] = orig + h;
      const double up = lossOf(params).loss.item<double>();
      flat[i] = orig - h;
      const double down = lossOf(params).loss.item<double>();
      flat[i] = orig;
      numeric.push_back((up - down) / (2 * h));
      analytic.push_back(p.grad().view(-1)[i].item<double>());
    }
  }
  double diff2 = 0, ref2 = 0, maxAbs = 0;
  for (size_t i = 0; i < analytic.size(); ++i) {
    diff2 += std::pow(analytic[i] - numeric[i], 2);
    ref2 += numeric[i] * numeric[i];
    maxAbs = std::max(maxAbs, std::abs(analytic[i] - numeric[i]));
  }
  const double rel = std::sqrt(diff2 / ref2);
  std::cout << "[ fd ] " << analytic.size() << " coordinates, relative error " << rel
            << ", max abs diff " << maxAbs << "\n";
  EXPECT_LT(rel, 1e-6);
}

TEST(Gradients, MatchFiniteDifferencesGroupedFloat64) {
  checkGradientsAgainstFiniteDifferences(tinyTestConfig());
}

TEST(Gradients, MatchFiniteDifferencesLoopSharedTiedFloat64) {
  checkGradientsAgainstFiniteDifferences(sharedTiedConfig());
}

// Random expert weights and a hand-made routing in which expert 2 gets no
// token; or k = E (every token to every expert).
struct ExpertsCase {
  torch::Tensor x, topkIdx, topkWeights;
  LocalExperts experts;
};

ExpertsCase makeExpertsCase(int64_t numTokens, int64_t numExperts, int64_t k, torch::ScalarType dtype,
                            uint64_t seed) {
  torch::manual_seed(seed);
  const int64_t hidden = 16, inter = 8;
  ExpertsCase c;
  c.x = torch::randn({numTokens, hidden}).to(dtype);
  if (k == numExperts) {
    c.topkIdx = torch::stack({torch::randperm(numExperts)}).repeat({numTokens, 1});
  } else {  // k distinct experts per token, never expert 2
    std::vector<int64_t> allowed;
    for (int64_t e = 0; e < numExperts; ++e)
      if (e != 2) allowed.push_back(e);
    auto a = torch::tensor(allowed);
    std::vector<torch::Tensor> rows;
    for (int64_t t = 0; t < numTokens; ++t)
      rows.push_back(a.index_select(0, torch::randperm(static_cast<int64_t>(allowed.size())).narrow(0, 0, k)));
    c.topkIdx = torch::stack(rows);
  }
  c.topkWeights = torch::softmax(torch::randn({numTokens, k}), -1);
  c.experts.gateUp = (torch::randn({numExperts, 2 * inter, hidden}) * 0.3).to(dtype);
  c.experts.down = (torch::randn({numExperts, hidden, inter}) * 0.3).to(dtype);
  return c;
}

torch::Tensor groupedPath(const ExpertsCase& c) {
  auto plan = kernels::makePermutePlan(c.topkIdx, c.experts.gateUp.size(0));
  auto y = groupedExpertsForward(kernels::permuteTokens(c.x, plan), plan.numTokensPerExpertHost,
                                 c.experts);
  return kernels::unpermuteCombine(y, plan, c.topkWeights);
}

double relDiff(const torch::Tensor& a, const torch::Tensor& b) {
  auto a64 = a.to(torch::kDouble), b64 = b.to(torch::kDouble);
  return ((a64 - b64).norm() / b64.norm().clamp_min(1e-30)).item<double>();
}

TEST(Experts, LoopAndGroupedAgreeFp32WithGradients) {
  for (auto [e, k] : {std::pair<int64_t, int64_t>{4, 2}, {5, 1}, {4, 4}, {6, 3}}) {
    auto c = makeExpertsCase(/*numTokens=*/9, e, k, torch::kFloat, /*seed=*/e * 10 + k);
    std::vector<torch::Tensor> leaves{c.x, c.topkWeights, c.experts.gateUp, c.experts.down};
    for (auto& t : leaves) t.requires_grad_(true);
    auto loop = loopExpertsForward(c.x, c.topkIdx, c.topkWeights, c.experts);
    auto grouped = groupedPath(c);
    auto probe = torch::randn_like(loop);
    auto gLoop = torch::autograd::grad({(loop * probe).sum()}, leaves);
    auto gGrouped = torch::autograd::grad({(grouped * probe).sum()}, leaves);
    const double outDiff = relDiff(loop, grouped);
    std::cout << "[ experts fp32 E=" << e << " k=" << k << " ] output rel diff " << outDiff;
    EXPECT_LT(outDiff, 1e-6);
    for (size_t i = 0; i < leaves.size(); ++i) {
      std::cout << ", grad" << i << " " << relDiff(gLoop[i], gGrouped[i]);
      EXPECT_LT(relDiff(gLoop[i], gGrouped[i]), 1e-6) << "E=" << e << " k=" << k << " grad " << i;
    }
    std::cout << "\n";
    if (k < e) {  // expert 2 got no token: zero gradient on both paths
      EXPECT_EQ(gGrouped[2][2].abs().sum().item<double>(), 0.0);
      EXPECT_EQ(gLoop[3][2].abs().sum().item<double>(), 0.0);
    }
  }
}

// bf16 bound. Both paths feed each expert the same rows in the same order, so
// they differ only by rounding (u = 2^-8, bf16's unit roundoff) in:
//  - h = silu(g) * up: grouped takes g, up from one [n, 2I] matmul, the loop
//    from two; each of g, up, silu(g), product may round differently: <= 4u|h_i|
//    per element and path, so |dy| <= 2 * (4u * S + u|y|) with
//    S = sum_i |down_i| |h_i| >= |y|, i.e. |dy| <= 10u S;
//  - the weighted sum over k slots in a different order: each path's k-term
//    sum plus the products w*y round within (k+1)u sum_j |w_j| S_j.
// Total per element: |loop - grouped| <= (10 + 2(k+1)) u sum_j |w_j| S_j.
TEST(Experts, LoopAndGroupedAgreeBf16WithinDerivedBound) {
  const double u = std::ldexp(1.0, -8);
  for (auto [e, k] : {std::pair<int64_t, int64_t>{4, 2}, {4, 4}, {6, 3}}) {
    auto c = makeExpertsCase(/*numTokens=*/12, e, k, torch::kBFloat16, /*seed=*/e * 7 + k);
    auto loop = loopExpertsForward(c.x, c.topkIdx, c.topkWeights, c.experts).to(torch::kDouble);
    auto grouped = groupedPath(c).to(torch::kDouble);
    // S_j from an fp64 evaluation of the same bf16 inputs.
    auto x = c.x.to(torch::kDouble);
    auto scale = torch::zeros_like(x);
    const int64_t inter = c.experts.down.size(2);
    for (int64_t t = 0; t < x.size(0); ++t)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t ex = c.topkIdx[t][j].item<int64_t>();
        auto gu = c.experts.gateUp[ex].to(torch::kDouble);
        auto h = torch::silu(gu.narrow(0, 0, inter).matmul(x[t])) * gu.narrow(0, inter, inter).matmul(x[t]);
        scale[t] += c.topkWeights[t][j].item<double>() * c.experts.down[ex].to(torch::kDouble).abs().matmul(h.abs());
      }
    auto bound = (10.0 + 2.0 * (k + 1)) * u * scale;
    auto excess = ((loop - grouped).abs() - bound).max().item<double>();
    std::cout << "[ experts bf16 E=" << e << " k=" << k << " ] max |diff| "
              << (loop - grouped).abs().max().item<double>() << ", max bound "
              << bound.max().item<double>() << ", rel diff " << relDiff(loop, grouped) << "\n";
    EXPECT_LE(excess, 0.0);
  }
}

TEST(Model, LoopAndGroupedAgreeFp32) {
  auto grouped = sharedTiedConfig();
  grouped.expertsImplementation = "grouped";
  auto loop = sharedTiedConfig();
  auto ids = syntheticBatch({2, 8, grouped.vocabSize, 1}, 1);
  auto run = [&](const ModelConfig& c) {
    auto params = cloneParams(initParameters(c, 3));
    for (auto& item : params) item.value().mul_(10.0).requires_grad_(true);
    auto parts = computeLoss(c, forwardModel(c, params, ids), ids);
    parts.loss.backward();
    return std::make_pair(parts, params);
  };
  auto [pl, gl] = run(loop);
  auto [pg, gg] = run(grouped);
  EXPECT_LT(relDiff(pl.loss, pg.loss), 1e-6);
  EXPECT_LT(relDiff(pl.aux, pg.aux), 1e-6);
  // Whole-gradient relative difference (all parameters as one vector) must be
  // < 1e-6. Per tensor, gradients built from cancelling sums (the router's,
  // through softmax) can lose a few more bits, so they get 1e-5.
  double diff2 = 0, ref2 = 0, worst = 0;
  std::string worstName;
  for (const auto& item : gl) {
    auto a = item.value().grad().to(torch::kDouble), b = gg[item.key()].grad().to(torch::kDouble);
    diff2 += (a - b).pow(2).sum().item<double>();
    ref2 += b.pow(2).sum().item<double>();
    const double r = relDiff(a, b);
    EXPECT_LT(r, 1e-5) << item.key();
    if (r > worst) worst = r, worstName = item.key();
  }
  const double global = std::sqrt(diff2 / ref2);
  std::cout << "[ model fp32 ] loss rel diff " << relDiff(pl.loss, pg.loss) << ", gradient rel diff "
            << global << ", worst tensor " << worstName << " " << worst << "\n";
  EXPECT_LT(global, 1e-6);
}

TEST(Loss, CrossEntropyAndAuxMatchHandLoops) {
  torch::manual_seed(9);
  const int64_t b = 2, s = 4, v = 5, n = 6, e = 4, k = 2;
  auto logits = torch::randn({b, s, v}, torch::kDouble);
  auto ids = torch::randint(0, v, {b, s});
  double ce = 0;
  for (int64_t r = 0; r < b; ++r)
    for (int64_t t = 0; t + 1 < s; ++t) {
      double z = 0;
      for (int64_t c = 0; c < v; ++c) z += std::exp(logits[r][t][c].item<double>());
      ce += std::log(z) - logits[r][t][ids[r][t + 1].item<int64_t>()].item<double>();
    }
  ce /= b * (s - 1);
  EXPECT_NEAR(causalLmCrossEntropy(logits, ids).item<double>(), ce, 1e-12);

  // Two "layers" of router logits with an exact tie in row 0 of layer 0.
  auto l0 = torch::randn({n, e}, torch::kDouble);
  l0[0] = torch::tensor({0.5, 0.5, 0.5, -1.0}, torch::kDouble);
  auto l1 = torch::randn({n, e}, torch::kDouble);
  std::vector<std::vector<double>> f(k, std::vector<double>(e, 0.0));
  std::vector<double> pMean(e, 0.0);
  for (const auto& l : {l0, l1})
    for (int64_t t = 0; t < n; ++t) {
      std::vector<double> p(e);
      double z = 0;
      for (int64_t i = 0; i < e; ++i) z += std::exp(l[t][i].item<double>());
      for (int64_t i = 0; i < e; ++i) p[i] = std::exp(l[t][i].item<double>()) / z, pMean[i] += p[i] / (2 * n);
      std::vector<bool> used(e, false);
      for (int64_t j = 0; j < k; ++j) {  // first maximum wins ties
        int64_t best = -1;
        for (int64_t i = 0; i < e; ++i)
          if (!used[i] && (best < 0 || p[i] > p[best])) best = i;
        used[best] = true;
        f[j][best] += 1.0 / (2 * n);
      }
    }
  double aux = 0;
  for (int64_t j = 0; j < k; ++j)
    for (int64_t i = 0; i < e; ++i) aux += f[j][i] * pMean[i];
  aux *= e;
  EXPECT_NEAR(loadBalancingLoss(routerAuxStats({l0, l1}, k)).item<double>(), aux, 1e-12);
}

}  // namespace
}  // namespace moe::ref
