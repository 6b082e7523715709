#pragma once
// Partial sums of tensor-parallel modules under a narrow compute dtype.
//
// A tensor-parallel module splits a matmul's reduction dim over the tp ranks:
// the rowwise output projection yields Partial(sum) activations, and the
// colwise input projections yield Partial(sum) input gradients. One device
// accumulates each such sum in fp32 and rounds it to bf16 ONCE; rounding each
// rank's part to bf16 before the ranks' parts are added rounds twice, and the
// extra noise is amplified wherever later sums cancel (norm-weight gradients
// are sums over every token and head), which puts bf16 parity out of reach.
// With PartialSums the module keeps those parts in fp32 until they are
// reduced, so the distributed bf16 run rounds where the single-device run
// does:
//  - wideInput: x arrives in fp32 holding compute-dtype values; the input
//    projections multiply in fp32 with the weight's (compute-dtype) values
//    and round the output to the weight's dtype. The forward equals the
//    compute-dtype matmul (bf16 products are exact in fp32), and x's gradient
//    stays fp32 until it is summed over the tp ranks.
//  - wideOutput: the output projection returns its partial result in fp32,
//    unrounded; the caller rounds after the reduction.
// Default (both false): plain matmuls in the operands' dtype.
#include <torch/torch.h>

#include <vector>

namespace moe::ref {

struct PartialSums {
  bool wideInput = false;
  bool wideOutput = false;
};

// y = x @ w.t(). x: [..., in] (fp32 when wideInput), w: [out, in] -> [..., out]
torch::Tensor projectIn(const torch::Tensor& x, const torch::Tensor& w, const PartialSums& ps);
// y = x @ w.t(), fp32 when wideOutput. x: [..., in], w: [out, in] -> [..., out]
torch::Tensor projectOut(const torch::Tensor& x, const torch::Tensor& w, const PartialSums& ps);

}  // namespace moe::ref
