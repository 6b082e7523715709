// Trainer tests: optimizer and clipping vs hand computations, bitwise
// determinism, and learning on the synthetic data.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "common/error.h"
#include "reference/model/config.h"
#include "reference/model/init.h"
#include "reference/train/trainer.h"

namespace moe::ref {
namespace {

const bool kOneThread = [] {
  at::set_num_threads(1);
  return true;
}();

TEST(AdamW, MatchesHandComputationOverThreeSteps) {
  AdamWOptions o{/*lr=*/0.1, /*beta1=*/0.8, /*beta2=*/0.9, /*eps=*/1e-3, /*weightDecay=*/0.5};
  AdamW opt(o);
  auto p = torch::tensor({1.0, -2.0, 0.5}, torch::kDouble);
  std::vector<double> hp{1.0, -2.0, 0.5}, m(3, 0.0), v(3, 0.0);
  const std::vector<std::vector<double>> gradSeq{{0.3, -1.0, 0.0}, {0.1, 2.0, -0.5}, {-0.2, 0.0, 4.0}};
  for (int step = 1; step <= 3; ++step) {
    opt.step({p}, {torch::tensor(gradSeq[step - 1], torch::kDouble)});
    for (int i = 0; i < 3; ++i) {
      const double g = gradSeq[step - 1][i];
      hp[i] -= o.lr * o.weightDecay * hp[i];
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
      const double mHat = m[i] / (1 - std::pow(o.beta1, step));
      const double vHat = v[i] / (1 - std::pow(o.beta2, step));
      hp[i] -= o.lr * mHat / (std::sqrt(vHat) + o.eps);
      EXPECT_NEAR(p[i].item<double>(), hp[i], 1e-12) << "step " << step << " element " << i;
    }
  }
  EXPECT_EQ(opt.stepCount(), 3);
  // Default hyperparameters are torch.optim.AdamW's.
  AdamWOptions d;
  EXPECT_EQ(d.lr, 1e-3);
  EXPECT_EQ(d.beta1, 0.9);
  EXPECT_EQ(d.beta2, 0.999);
  EXPECT_EQ(d.eps, 1e-8);
  EXPECT_EQ(d.weightDecay, 1e-2);
}

TEST(ClipGradNorm, MatchesHandComputation) {
  auto a = torch::tensor({3.0, 0.0}, torch::kDouble), b = torch::tensor({{4.0}}, torch::kDouble);
  // ||(3, 0, 4)|| = 5; max 1 -> coef 1 / (5 + 1e-6).
  EXPECT_DOUBLE_EQ(clipGradNorm({a, b}, 1.0), 5.0);
  const double coef = 1.0 / (5.0 + 1e-6);
  EXPECT_NEAR(a[0].item<double>(), 3.0 * coef, 1e-15);
  EXPECT_NEAR(b[0][0].item<double>(), 4.0 * coef, 1e-15);
  // Below the threshold the gradients stay untouched (coef clamped to 1).
  auto c = torch::tensor({0.3, 0.4}, torch::kDouble);
  EXPECT_NEAR(clipGradNorm({c}, 1.0), 0.5, 1e-15);
  EXPECT_EQ(c[0].item<double>(), 0.3);
  EXPECT_EQ(c[1].item<double>(), 0.4);
  // maxNorm <= 0 only measures.
  auto d = torch::tensor({30.0, 40.0}, torch::kDouble);
  EXPECT_NEAR(clipGradNorm({d}, 0.0), 50.0, 1e-12);
  EXPECT_EQ(d[0].item<double>(), 30.0);
}

TrainOptions shortRun(Precision precision, int64_t steps) {
  TrainOptions o;
  o.steps = steps;
  o.precision = precision;
  o.seed = 42;
  o.batchSize = 4;
  o.seqLen = 12;
  return o;
}

void expectBitwiseEqual(const TrainResult& a, const TrainResult& b) {
  ASSERT_EQ(a.steps.size(), b.steps.size());
  for (size_t s = 0; s < a.steps.size(); ++s) {
    const auto &x = a.steps[s], &y = b.steps[s];
    EXPECT_EQ(x.loss, y.loss) << "step " << s + 1;
    EXPECT_EQ(x.ce, y.ce);
    EXPECT_EQ(x.aux, y.aux);
    EXPECT_EQ(x.gradNorm, y.gradNorm);
    for (size_t i = 0; i < x.paramChecksums.size(); ++i) {
      EXPECT_EQ(x.paramChecksums[i].bitHash, y.paramChecksums[i].bitHash) << x.paramChecksums[i].name;
      EXPECT_EQ(x.gradChecksums[i].bitHash, y.gradChecksums[i].bitHash) << x.gradChecksums[i].name;
    }
  }
}

TEST(Trainer, SameSeedIsBitwiseIdenticalFp32AndBf16) {
  auto config = tinyTestConfig();
  for (auto p : {Precision::kFp32, Precision::kBf16}) {
    auto a = train(config, shortRun(p, 3));
    auto b = train(config, shortRun(p, 3));
    expectBitwiseEqual(a, b);
    auto other = shortRun(p, 1);
    other.seed = 43;
    EXPECT_NE(train(config, other).steps[0].loss, a.steps[0].loss);
  }
}

TEST(Trainer, LossFallsOver20Steps) {
  for (auto impl : {"grouped", "loop"})
    for (auto p : {Precision::kFp32, Precision::kBf16}) {
      auto config = tinyTestConfig();
      config.expertsImplementation = impl;
      auto o = shortRun(p, 20);
      o.adamw.lr = 1e-2;  // the tiny model learns visibly in 20 steps
      auto r = train(config, o);
      const auto &first = r.steps.front(), &last = r.steps.back();
      std::cout << "[ " << impl << " " << precisionName(p) << " ] loss " << first.loss << " -> "
                << last.loss << " (aux " << first.aux << " -> " << last.aux << ")\n";
      EXPECT_NEAR(first.ce, std::log(32.0), 0.3);  // near-uniform prediction at init
      EXPECT_LT(last.loss, first.loss - 0.5);
      for (const auto& st : r.steps) {
        EXPECT_TRUE(std::isfinite(st.loss));
        EXPECT_NEAR(st.loss, st.ce + config.routerAuxLossCoef * st.aux, 1e-5);
        EXPECT_GT(st.gradNorm, 0.0);
      }
    }
}

TEST(Trainer, Bf16KeepsFp32MastersAndGrads) {
  auto r = train(tinyTestConfig(), shortRun(Precision::kBf16, 1));
  for (const auto& item : r.gradsStep1) EXPECT_EQ(item.value().scalar_type(), torch::kFloat) << item.key();
  for (const auto& item : r.finalParams) EXPECT_EQ(item.value().scalar_type(), torch::kFloat) << item.key();
  EXPECT_THROW(parsePrecision("fp16"), HarnessError);
}

TEST(Trainer, RejectsParamsOfTheWrongShape) {
  auto config = tinyTestConfig();
  auto params = initParameters(config, 0);
  params["model.norm.weight"] = torch::ones({3});
  EXPECT_THROW(Trainer(config, params, shortRun(Precision::kFp32, 1)), HarnessError);
}

}  // namespace
}  // namespace moe::ref
