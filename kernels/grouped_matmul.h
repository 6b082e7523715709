#pragma once
// Grouped matmul over ragged groups of rows (one group per expert).
//
// Contract: rows [off_g, off_g + groupSizes[g]) of x are multiplied by
// weight[g]^T; groups may be empty. Differentiable with respect to x and
// weight (an empty group gets a zero weight gradient).
//
// Which path runs on which device (libtorch ops only; this project writes no
// CUDA kernel):
//  - CPU: kLoop, one torch::matmul per group (split, matmul, cat; autograd
//    gives the grouped backward). Always, so the CPU lane is unchanged.
//  - CUDA: kGroupedMm, libtorch's grouped GEMM at::_grouped_mm (one call for
//    every group, int32 end offsets, its own backward) when the inputs meet
//    its layout rules: float32/bfloat16/float16 of one dtype, and the inner
//    dimension's rows 16-byte aligned (in x element size % 16 == 0); kLoop
//    (cuBLAS matmuls per group) otherwise.
// groupedMatmulPath() says which one a call takes; docs/design.md ("Device
// lane") has the same table for every kernel.
#include <torch/torch.h>

#include <vector>

namespace moe::kernels {

enum class GroupedMatmulPath {
  kLoop,       // one matmul per group (any device)
  kGroupedMm,  // at::_grouped_mm, one grouped GEMM (chosen on CUDA only)
};
const char* groupedMatmulPathName(GroupedMatmulPath path);  // "loop" | "grouped_mm"

// The path groupedMatmul takes for these inputs (see the table above).
// x: [num_rows, in], weight: [num_groups, out, in]
GroupedMatmulPath groupedMatmulPath(const torch::Tensor& x, const torch::Tensor& weight);

// x: [num_rows, in], weight: [num_groups, out, in], sum(groupSizes) = num_rows
// -> [num_rows, out], by groupedMatmulPath(x, weight).
torch::Tensor groupedMatmul(const torch::Tensor& x, const torch::Tensor& weight,
                            const std::vector<int64_t>& groupSizes);
// The same on a chosen path (tests: kGroupedMm also runs on the CPU through
// libtorch's reference implementation of at::_grouped_mm).
torch::Tensor groupedMatmul(const torch::Tensor& x, const torch::Tensor& weight,
                            const std::vector<int64_t>& groupSizes, GroupedMatmulPath path);

}  // namespace moe::kernels
