#pragma once
// Compute precision of weights and matmuls, and the partial sums of
// tensor-parallel modules, under a compute dtype narrower than fp32.
//
// Weights (computeWeight): a narrow-dtype run computes with the fp32 masters
// rounded to the compute dtype, but keeps the rounded weight in fp32 with a
// straight-through gradient, and every matmul (linear / groupedLinear)
// multiplies in fp32 and rounds its output to the compute dtype. The forward
// is the compute-dtype matmul (a product of two bf16 numbers is exact in fp32,
// and the sum is accumulated in fp32 and rounded once, as CPU bf16 GEMMs do);
// activation gradients are rounded where the bf16 graph rounds them. Weight
// gradients stay fp32 and are never rounded (Megatron's fp32 main-grad
// accumulation): each data-parallel rank's gradient is a partial sum over
// its tokens, and rounding those partials to bf16 before they are summed
// over ranks rounds where the single-device run does not. Cancelling sums
// (norm weights, the router) amplify that to percent-level errors, and Adam
// turns tiny gradient differences of near-zero elements into visible
// parameter differences.
//
// Partial sums (PartialSums): a tensor-parallel module splits a matmul's
// reduction dim over the tp ranks: the rowwise output projection yields
// Partial(sum) activations, and the colwise input projections Partial(sum)
// input gradients. One device accumulates each in fp32 and rounds once, so
// the module keeps those parts in fp32 until they are reduced:
//  - wideInput: x arrives in fp32 holding compute-dtype values (its gradient
//    stays fp32 until it is summed over the tp ranks); computeDtype names the
//    dtype the projections round their outputs to;
//  - wideOutput: the output projection returns its partial result in fp32,
//    unrounded; the caller rounds after the reduction.
// Default (both false): x's dtype is the compute dtype.
#include <torch/torch.h>

#include <vector>

namespace moe::ref {

struct PartialSums {
  bool wideInput = false;
  bool wideOutput = false;
  torch::ScalarType computeDtype = torch::kFloat;  // used when wideInput
};

// The weight a step computes with: master rounded to dt. Narrower dt: an
// fp32 tensor holding dt values whose gradient reaches the master unrounded;
// otherwise master.to(dt). master: any shape
torch::Tensor computeWeight(const torch::Tensor& master, torch::ScalarType dt);

// The dtype x's activations are in: ps.computeDtype for a wide input, else
// x's dtype.
torch::ScalarType activationDtype(const torch::Tensor& x, const PartialSums& ps);

// y = x @ w.t(), multiplied in fp32 (fp64 for fp64 compute), rounded to the
// activation dtype unless ps.wideOutput (then fp32).
// x: [..., in], w: [out, in] (any float dtype) -> [..., out]
torch::Tensor project(const torch::Tensor& x, const torch::Tensor& w, const PartialSums& ps = {});

// Per-expert y = x @ w[e].t() for row groups (kernels::groupedMatmul), with
// project()'s precision rules.
// x: [N, in], w: [L, out, in], rowsPerExpert: L counts -> [N, out]
torch::Tensor groupedProject(const torch::Tensor& x, const torch::Tensor& w,
                            const std::vector<int64_t>& rowsPerExpert, const PartialSums& ps = {});

}  // namespace moe::ref
