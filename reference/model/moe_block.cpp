#include "reference/model/moe_block.h"

#include "common/error.h"
#include "kernels/grouped_matmul.h"
#include "kernels/permute.h"
#include "reference/model/deepseek_v3.h"
#include "reference/model/family.h"

namespace moe::ref {

RouterOutput routeTokens(const torch::Tensor& x, const torch::Tensor& routerWeight,
                         const ModelConfig& config, const torch::Tensor& correctionBias) {
  if (familyOf(config).biasCorrectedRouter())
    return biasCorrectedRoute(x, routerWeight, correctionBias, config);
  RouterOutput r;
  r.logits = project(x, routerWeight);
  r.routing = kernels::topkRoute(r.logits, {/*topK=*/config.numExpertsPerTok,
                                            /*normTopkProb=*/config.normTopkProb});
  return r;
}

torch::Tensor swiglu(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& up,
                     const torch::Tensor& down, const PartialSums& partialSums) {
  // Inputs may be wide; the intermediate is in the compute dtype; the output
  // may stay a wide partial sum (partial_sums.h).
  const PartialSums in{partialSums.wideInput, /*wideOutput=*/false, partialSums.computeDtype};
  auto h = torch::silu(project(x, gate, in)) * project(x, up, in);
  return project(h, down, {/*wideInput=*/false, partialSums.wideOutput, partialSums.computeDtype});
}

torch::Tensor groupedExpertsForward(const torch::Tensor& xPerm,
                                    const std::vector<int64_t>& numTokensPerLocalExpert,
                                    const LocalExperts& experts, const PartialSums& partialSums) {
  const int64_t inter = experts.down.size(2);
  MOE_ASSERT_EQ(experts.gateUp.size(1), 2 * inter, "gate_up_proj rows vs 2 * down_proj cols");
  const PartialSums in{partialSums.wideInput, /*wideOutput=*/false, partialSums.computeDtype};
  auto gateUp = groupedProject(xPerm, experts.gateUp, numTokensPerLocalExpert, in);
  auto h = torch::silu(gateUp.narrow(1, 0, inter)) * gateUp.narrow(1, inter, inter);
  return groupedProject(h, experts.down, numTokensPerLocalExpert,
                       {/*wideInput=*/false, partialSums.wideOutput, partialSums.computeDtype});
}

namespace {

// The dtype the routing weights multiply the expert outputs in: the compute
// dtype (Qwen3-MoE casts its top-k weights to it), or, for a family that
// keeps them fp32 through the combine (ModelFamily::fp32Combine, Mixtral),
// the wider of the two: the weighted sum is then rounded to x's dtype once.
torch::ScalarType combineDtype(const torch::Tensor& x, const torch::Tensor& topkWeights, bool wide) {
  return wide ? promoteTypes(x.scalar_type(), topkWeights.scalar_type()) : x.scalar_type();
}

torch::Tensor loopExperts(const torch::Tensor& x, const torch::Tensor& topkIdx,
                          const torch::Tensor& topkWeights, const LocalExperts& experts, bool wide) {
  const int64_t numLocal = experts.gateUp.size(0), inter = experts.down.size(2);
  const auto dt = combineDtype(x, topkWeights, wide);
  auto out = torch::zeros_like(x, x.options().dtype(dt));
  auto weights = topkWeights.to(dt);
  for (int64_t e = 0; e < numLocal; ++e) {
    // nonzero() lists (token, slot) pairs in token order.
    auto hits = topkIdx.eq(experts.firstExpert + e).nonzero();  // [n, 2]
    if (hits.size(0) == 0) continue;
    auto tokens = hits.select(1, 0), slots = hits.select(1, 1);
    auto gateUp = experts.gateUp[e];  // [2I, H]
    auto y = swiglu(x.index_select(0, tokens), gateUp.narrow(0, 0, inter),
                    gateUp.narrow(0, inter, inter), experts.down[e]);
    auto w = weights.index({tokens, slots}).unsqueeze(1);  // [n, 1]
    out = out.index_add(0, tokens, y.to(dt) * w);
  }
  // Unrounded when wide: the caller rounds once (after any tp sum).
  return out;
}

// kernels::unpermuteCombine with the weights kept in their own dtype: the
// slots are promoted, weighted and summed left to right there (the order
// unpermuteCombine uses), then rounded once.
// yPerm: [T*k, H], topkWeights: [T, k] -> [T, H]
torch::Tensor wideCombine(const torch::Tensor& yPerm, const kernels::PermutePlan& plan,
                          const torch::Tensor& topkWeights) {
  const auto dt = combineDtype(yPerm, topkWeights, /*wide=*/true);
  auto weighted = kernels::unpermuteTokens(yPerm, plan).to(dt) * topkWeights.to(dt).unsqueeze(-1);
  auto out = weighted.select(1, 0);
  for (int64_t j = 1; j < plan.topK; ++j) out = out + weighted.select(1, j);
  return out.to(yPerm.scalar_type());
}

}  // namespace

torch::Tensor loopExpertsForward(const torch::Tensor& x, const torch::Tensor& topkIdx,
                                 const torch::Tensor& topkWeights, const LocalExperts& experts,
                                 bool fp32Combine) {
  return loopExperts(x, topkIdx, topkWeights, experts, fp32Combine);
}

torch::Tensor combineExpertOutputs(const torch::Tensor& yPerm, const kernels::PermutePlan& plan,
                                   const torch::Tensor& topkWeights, bool fp32Combine) {
  return fp32Combine ? wideCombine(yPerm, plan, topkWeights)
                     : kernels::unpermuteCombine(yPerm, plan, topkWeights);
}

MoeBlockOutput moeBlockForward(const torch::Tensor& x, const MoeBlockWeights& weights,
                               const ModelConfig& config) {
  const int64_t numExperts = weights.router.size(0);
  MOE_ASSERT_EQ(weights.experts.gateUp.size(0), numExperts, "single-device block holds all experts");
  auto router = routeTokens(x, weights.router, config, weights.correctionBias);
  const auto& routing = router.routing;
  const bool wide = familyOf(config).fp32Combine();
  torch::Tensor out;
  if (config.expertsImplementation == "loop") {
    out = loopExperts(x, routing.topkIdx, routing.topkWeights, weights.experts, wide)
              .to(x.scalar_type());
  } else {
    auto plan = kernels::makePermutePlan(routing.topkIdx, numExperts);
    auto y = groupedExpertsForward(kernels::permuteTokens(x, plan), plan.numTokensPerExpertHost,
                                   weights.experts);
    out = combineExpertOutputs(y, plan, routing.topkWeights, wide);
  }
  if (weights.sharedExpertGate.defined()) {
    auto shared = swiglu(x, weights.sharedGate, weights.sharedUp, weights.sharedDown);
    out = out + torch::sigmoid(project(x, weights.sharedExpertGate)) * shared;
  } else if (weights.sharedGate.defined()) {  // deepseek_v3's ungated shared experts
    out = out + swiglu(x, weights.sharedGate, weights.sharedUp, weights.sharedDown);
  }
  return {out, router.logits, routing.topkIdx};
}

}  // namespace moe::ref
