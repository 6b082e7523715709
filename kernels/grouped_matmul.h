#pragma once
// Grouped matmul over ragged groups of rows (one group per expert).
//
// Contract: rows [off_g, off_g + groupSizes[g]) of x are multiplied by
// weight[g]^T; groups may be empty. Differentiable with respect to x and
// weight (an empty group gets a zero weight gradient).
#include <torch/torch.h>

#include <vector>

namespace moe::kernels {

// x: [num_rows, in], weight: [num_groups, out, in], sum(groupSizes) = num_rows
// -> [num_rows, out]
torch::Tensor groupedMatmul(const torch::Tensor& x, const torch::Tensor& weight,
                            const std::vector<int64_t>& groupSizes);

}  // namespace moe::kernels
