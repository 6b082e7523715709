#include "kernels/routing.h"

#include "common/error.h"

namespace moe::kernels {

torch::ScalarType routingDtype(torch::ScalarType inputDtype) {
  return inputDtype == torch::kDouble ? torch::kDouble : torch::kFloat;
}

torch::Tensor stableTopkIndices(const torch::Tensor& scores, int64_t k) {
  MOE_ASSERT(scores.dim() == 2, "scores must be [num_rows, n], got dim ", scores.dim());
  const int64_t n = scores.size(1);
  MOE_ASSERT(k >= 1 && k <= n, "k=", k, " n=", n);
  torch::NoGradGuard noGrad;
  // rank[r, i] = #{j : s_j > s_i} + #{j < i : s_j == s_i}: a total order that
  // breaks ties by index. Ranks are a permutation of 0..n-1 in every row, so
  // sorting them has exactly one answer whatever the sort's stability.
  auto s = scores.detach();
  auto si = s.unsqueeze(2);  // [rows, n, 1]: candidate i
  auto sj = s.unsqueeze(1);  // [rows, 1, n]: competitor j
  auto idx = torch::arange(n, torch::TensorOptions().dtype(torch::kLong).device(s.device()));
  auto jBeforeI = idx.view({1, 1, n}) < idx.view({1, n, 1});
  auto beats = (sj > si).logical_or(sj.eq(si).logical_and(jBeforeI));
  auto rank = beats.sum(/*dim=*/2);  // [rows, n] int64
  return std::get<1>(rank.sort(/*dim=*/1)).narrow(1, 0, k).contiguous();
}

TopkRouting topkRoute(const torch::Tensor& logits, const TopkRoutingOptions& options) {
  MOE_ASSERT(logits.dim() == 2, "router logits must be [num_tokens, num_experts]");
  if (options.topK < 1 || options.topK > logits.size(1))
    fail("routing: top-k ", options.topK, " is outside [1, num_experts=", logits.size(1), "]");
  TopkRouting r;
  r.probs = torch::softmax(logits.to(routingDtype(logits.scalar_type())), /*dim=*/-1);
  r.topkIdx = stableTopkIndices(r.probs, options.topK);
  r.topkWeights = r.probs.gather(/*dim=*/1, r.topkIdx);
  if (options.normTopkProb) r.topkWeights = r.topkWeights / r.topkWeights.sum(-1, /*keepdim=*/true);
  return r;
}

}  // namespace moe::kernels
