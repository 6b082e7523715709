// Unit tests of the MoE kernels. Expected values come from naive per-element
// loops written here, never from the kernels themselves.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <numeric>

#include "common/error.h"
#include "kernels/grouped_matmul.h"
#include "kernels/permute.h"
#include "kernels/routing.h"

namespace moe::kernels {
namespace {

// Naive top-k: repeatedly scan for the strictly largest remaining value, the
// first one found (lowest index) winning ties.
std::vector<int64_t> naiveTopk(const std::vector<double>& row, int64_t k) {
  std::vector<bool> taken(row.size(), false);
  std::vector<int64_t> out;
  for (int64_t j = 0; j < k; ++j) {
    int64_t best = -1;
    for (size_t i = 0; i < row.size(); ++i)
      if (!taken[i] && (best < 0 || row[i] > row[best])) best = static_cast<int64_t>(i);
    taken[best] = true;
    out.push_back(best);
  }
  return out;
}

TEST(Routing, TiesGoToLowerExpertIndex) {
  // Rows full of exact ties, including all-equal rows and k = E.
  auto scores = torch::tensor({{0.25, 0.25, 0.25, 0.25},
                               {0.1, 0.4, 0.1, 0.4},
                               {0.3, 0.2, 0.3, 0.2},
                               {0.0, 0.5, 0.5, 0.0}},
                              torch::kFloat);
  for (int64_t k = 1; k <= 4; ++k) {
    auto idx = stableTopkIndices(scores, k);
    for (int64_t r = 0; r < scores.size(0); ++r) {
      std::vector<double> row;
      for (int64_t i = 0; i < 4; ++i) row.push_back(scores[r][i].item<double>());
      auto want = naiveTopk(row, k);
      for (int64_t j = 0; j < k; ++j)
        EXPECT_EQ(idx[r][j].item<int64_t>(), want[j]) << "row " << r << " k " << k << " slot " << j;
    }
  }
}

TEST(Routing, RandomRowsMatchNaiveTopkAndSoftmax) {
  torch::manual_seed(1);
  // Quantised logits make ties frequent.
  auto logits = torch::randint(0, 4, {64, 6}).to(torch::kFloat);
  auto r = topkRoute(logits, {/*topK=*/3, /*normTopkProb=*/true});
  auto p = r.probs.to(torch::kDouble);
  for (int64_t t = 0; t < 64; ++t) {
    std::vector<double> row;
    double z = 0;
    for (int64_t e = 0; e < 6; ++e) z += std::exp(logits[t][e].item<double>());
    for (int64_t e = 0; e < 6; ++e) {
      row.push_back(p[t][e].item<double>());
      EXPECT_NEAR(row.back(), std::exp(logits[t][e].item<double>()) / z, 1e-6);
    }
    auto want = naiveTopk(row, 3);
    double sum = 0;
    for (int64_t j = 0; j < 3; ++j) sum += row[want[j]];
    for (int64_t j = 0; j < 3; ++j) {
      EXPECT_EQ(r.topkIdx[t][j].item<int64_t>(), want[j]);
      EXPECT_NEAR(r.topkWeights[t][j].item<double>(), row[want[j]] / sum, 1e-6);
    }
  }
  EXPECT_EQ(r.probs.scalar_type(), torch::kFloat);
  EXPECT_EQ(topkRoute(logits.to(torch::kBFloat16), {2, false}).probs.scalar_type(), torch::kFloat);
}

TEST(Routing, WeightsGradientMatchesFiniteDifferences) {
  torch::manual_seed(2);
  auto logits = torch::randn({5, 4}, torch::kDouble).requires_grad_(true);
  auto probe = torch::randn({5, 2}, torch::kDouble);
  auto f = [&](const torch::Tensor& l) {
    return (topkRoute(l, {2, true}).topkWeights * probe).sum();
  };
  f(logits).backward();
  const double h = 1e-6;
  auto base = logits.detach();
  for (int64_t i = 0; i < base.numel(); ++i) {
    auto plus = base.clone(), minus = base.clone();
    plus.view(-1)[i] += h;
    minus.view(-1)[i] -= h;
    double fd = (f(plus).item<double>() - f(minus).item<double>()) / (2 * h);
    EXPECT_NEAR(logits.grad().view(-1)[i].item<double>(), fd, 1e-8) << "element " << i;
  }
}

TEST(Routing, TopKOutOfRangeIsAUserError) {
  EXPECT_THROW(topkRoute(torch::zeros({2, 3}), {/*topK=*/4, false}), HarnessError);
}

// Routing with an expert that gets no tokens (expert 2 of 5) and exact ties.
torch::Tensor routingWithEmptyExpert() {
  return torch::tensor({{0, 1}, {3, 0}, {1, 4}, {4, 3}, {0, 4}, {1, 0}}, torch::kLong);
}

TEST(Permute, CountsOffsetsAndOrder) {
  auto topk = routingWithEmptyExpert();
  auto plan = makePermutePlan(topk, /*numExperts=*/5);
  std::vector<int64_t> counts(5, 0);
  for (int64_t t = 0; t < 6; ++t)
    for (int64_t j = 0; j < 2; ++j) counts[topk[t][j].item<int64_t>()]++;
  EXPECT_EQ(plan.numTokensPerExpertHost, counts);
  EXPECT_EQ(plan.numTokensPerExpertHost[2], 0);
  int64_t off = 0, row = 0;
  for (int64_t e = 0; e < 5; ++e) {
    EXPECT_EQ(plan.offsets[e].item<int64_t>(), off);
    off += counts[e];
    // Expert e's rows hold, in token order, the tokens routed to e.
    for (int64_t t = 0; t < 6; ++t)
      for (int64_t j = 0; j < 2; ++j)
        if (topk[t][j].item<int64_t>() == e) {
          EXPECT_EQ(plan.tokenOfRow[row].item<int64_t>(), t) << "row " << row;
          EXPECT_EQ(plan.rowOfSlot[t * 2 + j].item<int64_t>(), row);
          ++row;
        }
  }
  EXPECT_EQ(plan.offsets[5].item<int64_t>(), 12);
}

TEST(Permute, RoundTripIsIdentity) {
  torch::manual_seed(3);
  for (int64_t k : {1, 2, 4}) {  // k = 4 = E: every token goes to every expert
    auto topk = k == 4 ? torch::arange(4).flip(0).repeat({7, 1})
                       : torch::randint(0, 3, {7, k});  // expert 3 empty
    auto plan = makePermutePlan(topk, /*numExperts=*/4);
    // Values encode their origin: x[t, h] = 100 t + h.
    auto x = (torch::arange(7).unsqueeze(1) * 100 + torch::arange(5).unsqueeze(0)).to(torch::kFloat);
    auto back = unpermuteTokens(permuteTokens(x, plan), plan);  // [T, k, H]
    for (int64_t j = 0; j < k; ++j) EXPECT_TRUE(torch::equal(back.select(1, j), x)) << "k " << k;
  }
}

TEST(Permute, CombineMatchesNaiveLoopAndGradients) {
  torch::manual_seed(4);
  auto topk = routingWithEmptyExpert();
  auto plan = makePermutePlan(topk, 5);
  auto x = torch::randn({6, 3}, torch::kDouble).requires_grad_(true);
  auto w = torch::rand({6, 2}, torch::kDouble).requires_grad_(true);
  // "Expert e" scales its rows by (e + 1).
  auto scale = (topk.flatten().index_select(0, std::get<1>((topk.flatten() * 12 + torch::arange(12)).sort())) + 1)
                   .to(torch::kDouble).unsqueeze(1);
  auto out = unpermuteCombine(permuteTokens(x, plan) * scale, plan, w);
  auto want = torch::zeros({6, 3}, torch::kDouble);
  for (int64_t t = 0; t < 6; ++t)
    for (int64_t j = 0; j < 2; ++j)
      want[t] += w[t][j].detach() * (topk[t][j].item<int64_t>() + 1) * x[t].detach();
  EXPECT_TRUE(torch::allclose(out, want, 1e-12, 1e-12));
  out.sum().backward();
  // d/dx[t] = sum_j w[t,j] (e_j + 1); d/dw[t,j] = (e_j + 1) sum_h x[t,h].
  for (int64_t t = 0; t < 6; ++t) {
    double gx = 0;
    for (int64_t j = 0; j < 2; ++j) {
      const double s = topk[t][j].item<int64_t>() + 1;
      gx += w[t][j].item<double>() * s;
      EXPECT_NEAR(w.grad()[t][j].item<double>(), s * x[t].sum().item<double>(), 1e-12);
    }
    for (int64_t h = 0; h < 3; ++h) EXPECT_NEAR(x.grad()[t][h].item<double>(), gx, 1e-12);
  }
}

TEST(GroupedMatmul, MatchesNaiveRowsIncludingEmptyGroups) {
  torch::manual_seed(5);
  std::vector<int64_t> sizes{3, 0, 4, 0, 1};
  auto x = torch::randn({8, 6}, torch::kDouble).requires_grad_(true);
  auto w = torch::randn({5, 2, 6}, torch::kDouble).requires_grad_(true);
  auto y = groupedMatmul(x, w, sizes);
  auto gy = torch::randn({8, 2}, torch::kDouble);
  (y * gy).sum().backward();
  auto wantGx = torch::zeros({8, 6}, torch::kDouble);
  auto wantGw = torch::zeros({5, 2, 6}, torch::kDouble);
  int64_t row = 0;
  for (int64_t g = 0; g < 5; ++g)
    for (int64_t i = 0; i < sizes[g]; ++i, ++row)
      for (int64_t o = 0; o < 2; ++o) {
        double acc = 0;
        for (int64_t c = 0; c < 6; ++c) {
          acc += x[row][c].item<double>() * w[g][o][c].item<double>();
          wantGx[row][c] += gy[row][o] * w[g][o][c].detach();
          wantGw[g][o][c] += gy[row][o] * x[row][c].detach();
        }
        EXPECT_NEAR(y[row][o].item<double>(), acc, 1e-12);
      }
  EXPECT_TRUE(torch::allclose(x.grad(), wantGx, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(w.grad(), wantGw, 1e-12, 1e-12));
  EXPECT_EQ(w.grad()[1].abs().sum().item<double>(), 0.0);
}

// The CPU lane always takes the loop (so CPU results are what they were).
TEST(GroupedMatmul, CpuTensorsTakeTheLoopPath) {
  auto x = torch::randn({4, 8});
  auto w = torch::randn({2, 3, 8});
  EXPECT_EQ(groupedMatmulPath(x, w), GroupedMatmulPath::kLoop);
  EXPECT_STREQ(groupedMatmulPathName(GroupedMatmulPath::kGroupedMm), "grouped_mm");
}

// The grouped-GEMM path's call convention (int32 end offsets, the weight
// transposed, empty groups) checked where it can run here: libtorch's CPU
// implementation of at::_grouped_mm, against the loop, values and gradients.
TEST(GroupedMatmul, GroupedMmPathMatchesTheLoopIncludingEmptyGroups) {
  torch::manual_seed(7);
  std::vector<int64_t> sizes{3, 0, 5, 0, 2};
  auto x0 = torch::randn({10, 8});
  auto w0 = torch::randn({5, 4, 8});
  auto gy = torch::randn({10, 4});
  auto run = [&](GroupedMatmulPath path) {
    auto x = x0.clone().requires_grad_(true);
    auto w = w0.clone().requires_grad_(true);
    auto y = groupedMatmul(x, w, sizes, path);
    (y * gy).sum().backward();
    return std::make_tuple(y.detach(), x.grad(), w.grad());
  };
  auto [yLoop, gxLoop, gwLoop] = run(GroupedMatmulPath::kLoop);
  auto [yMm, gxMm, gwMm] = run(GroupedMatmulPath::kGroupedMm);
  EXPECT_TRUE(torch::allclose(yMm, yLoop, 1e-5, 1e-6)) << (yMm - yLoop).abs().max().item<float>();
  EXPECT_TRUE(torch::allclose(gxMm, gxLoop, 1e-5, 1e-6)) << (gxMm - gxLoop).abs().max().item<float>();
  ASSERT_TRUE(gwMm.defined());
  EXPECT_TRUE(torch::allclose(gwMm, gwLoop, 1e-5, 1e-6)) << (gwMm - gwLoop).abs().max().item<float>();
  EXPECT_EQ(gwMm[1].abs().sum().item<float>(), 0.0f);  // an empty group gets a zero gradient
}

}  // namespace
}  // namespace moe::kernels
