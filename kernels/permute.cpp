#include "kernels/permute.h"

#include "common/error.h"

namespace moe::kernels {

PermutePlan makePermutePlan(const torch::Tensor& topkIdx, int64_t numExperts) {
  MOE_ASSERT(topkIdx.dim() == 2 && topkIdx.scalar_type() == torch::kLong,
             "topkIdx must be [T, k] int64");
  torch::NoGradGuard noGrad;
  PermutePlan p;
  p.numTokens = topkIdx.size(0);
  p.topK = topkIdx.size(1);
  const int64_t numSlots = p.numTokens * p.topK;
  auto flat = topkIdx.reshape({numSlots});
  if (numSlots > 0) {
    const int64_t lo = flat.min().item<int64_t>(), hi = flat.max().item<int64_t>();
    MOE_ASSERT(lo >= 0 && hi < numExperts, "expert index out of range [", lo, ", ", hi,
               "] for ", numExperts, " experts");
  }
  auto opts = flat.options();
  auto slot = torch::arange(numSlots, opts);
  // Unique keys, so the permutation does not depend on the sort's stability.
  auto key = flat * numSlots + slot;
  auto slotOfRow = std::get<1>(key.sort());
  p.tokenOfRow = slotOfRow.div(p.topK, /*rounding_mode=*/"floor");
  p.rowOfSlot = torch::empty_like(slotOfRow).scatter_(0, slotOfRow, slot);
  p.numTokensPerExpert = torch::bincount(flat, /*weights=*/{}, /*minlength=*/numExperts);
  if (numSlots == 0) p.numTokensPerExpert = torch::zeros({numExperts}, opts);
  p.offsets = torch::cat({torch::zeros({1}, opts), p.numTokensPerExpert.cumsum(0)});
  // The host copy of the counts (split sizes steer host loops); a no-op
  // on the CPU, one small device-to-host copy on CUDA.
  auto counts = p.numTokensPerExpert.to(torch::kCPU).contiguous();
  p.numTokensPerExpertHost.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + numExperts);
  return p;
}

torch::Tensor permuteTokens(const torch::Tensor& x, const PermutePlan& plan) {
  MOE_ASSERT_EQ(x.size(0), plan.numTokens, "x rows vs plan tokens");
  return x.index_select(0, plan.tokenOfRow);
}

torch::Tensor unpermuteTokens(const torch::Tensor& yPerm, const PermutePlan& plan) {
  MOE_ASSERT_EQ(yPerm.size(0), plan.numTokens * plan.topK, "yPerm rows vs plan slots");
  return yPerm.index_select(0, plan.rowOfSlot).view({plan.numTokens, plan.topK, yPerm.size(1)});
}

torch::Tensor unpermuteCombine(const torch::Tensor& yPerm, const PermutePlan& plan,
                               const torch::Tensor& topkWeights) {
  MOE_ASSERT(topkWeights.dim() == 2 && topkWeights.size(0) == plan.numTokens &&
                 topkWeights.size(1) == plan.topK,
             "topkWeights must be [T, k]");
  auto slots = unpermuteTokens(yPerm, plan);  // [T, k, H]
  auto weighted = slots * topkWeights.to(yPerm.scalar_type()).unsqueeze(-1);
  // Explicit left-to-right sum over slots: the same association a per-expert
  // loop with index_add would use for k=2, and well defined for any k.
  auto out = weighted.select(1, 0);
  for (int64_t j = 1; j < plan.topK; ++j) out = out + weighted.select(1, j);
  return out;
}

}  // namespace moe::kernels
