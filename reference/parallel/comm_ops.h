#pragma once
// Differentiable collectives (torch::autograd::Function) for the distributed
// model. Each op's backward is the collective's adjoint, issued in the
// backward pass on the same communicator; every member must run the same
// forward (and therefore the same backward) sequence.
//
// A group of size 1 makes every op the identity (no collective is issued).
// The communicator must outlive the autograd graph.
#include <torch/torch.h>

#include <vector>

#include "harness/comm/communicator.h"

namespace moe::parallel {

// all_to_all_single of rows: rows [off_j, off_j + inSplits[j]) go to rank j,
// outSplits[i] rows arrive from rank i. Backward: the reverse all_to_all with
// the splits swapped.
// x: [sum(inSplits), ...] -> [sum(outSplits), ...]
torch::Tensor allToAllRows(const torch::Tensor& x, comm::Communicator& group,
                           const std::vector<int64_t>& outSplits,
                           const std::vector<int64_t>& inSplits);

// Megatron's f: identity forward, all-reduce(sum) of the gradient backward.
// For a replicated input consumed by tensor-parallel (sharded) compute whose
// input gradients are partial. x: any shape
torch::Tensor copyToGroup(const torch::Tensor& x, comm::Communicator& group);

// Megatron's g: all-reduce(sum) forward, identity backward. Reduces a
// Partial(sum) output. x: any shape
torch::Tensor reduceFromGroup(const torch::Tensor& x, comm::Communicator& group);

// All-gather along `dim` (pieces of torch.chunk sizes, rank order) forward;
// reduce-scatter of the gradient backward (sequence parallelism's entry).
// x: [..., n_rank, ...] -> [..., sum_r n_r, ...]
torch::Tensor gatherAlongDim(const torch::Tensor& x, comm::Communicator& group, int64_t dim,
                             const std::vector<int64_t>& piecesPerRank);

// Reduce-scatter along `dim` forward (each rank keeps its torch.chunk piece
// of the sum); all-gather of the gradient backward (sequence parallelism's
// exit from a rowwise module).
// x: [..., sum_r n_r, ...] -> [..., n_rank, ...]
torch::Tensor reduceScatterAlongDim(const torch::Tensor& x, comm::Communicator& group, int64_t dim,
                                    const std::vector<int64_t>& piecesPerRank);

// Not differentiable: all-gather along `dim` (e.g. integer top-k indices).
torch::Tensor gatherAlongDimNoGrad(const torch::Tensor& x, comm::Communicator& group, int64_t dim,
                                   const std::vector<int64_t>& piecesPerRank);

// torch.chunk piece sizes of n over `parts`.
std::vector<int64_t> chunkSizes(int64_t n, int64_t parts);

}  // namespace moe::parallel
