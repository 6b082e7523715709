#include "kernels/grouped_matmul.h"

#include <numeric>

#include "common/error.h"

namespace moe::kernels {
namespace {

bool groupedMmDtype(torch::ScalarType t) {
  return t == torch::kFloat || t == torch::kBFloat16 || t == torch::kHalf;
}

torch::Tensor loopMatmul(const torch::Tensor& x, const torch::Tensor& weight, const std::vector<int64_t>& groupSizes) {
  // One matmul per group. Autograd through split/matmul/cat gives the
  // grouped backward (dx per group, dW_g = dy_g^T x_g). The weight is
  // unbound, not indexed per group: select's backward builds a zero tensor
  // of the whole [G, out, in] weight per group and adds it up (G full-size
  // temporaries and G^2 slices of work: minutes and a second full gradient
  // at 128 experts), unbind's backward stacks the G pieces once.
  auto pieces = x.split_with_sizes(groupSizes, /*dim=*/0);
  const auto weights = weight.unbind(0);
  std::vector<torch::Tensor> outs;
  outs.reserve(pieces.size());
  for (size_t g = 0; g < pieces.size(); ++g) outs.push_back(torch::matmul(pieces[g], weights[g].t()));
  if (outs.empty()) return x.new_zeros({0, weight.size(1)});
  return torch::cat(outs, /*dim=*/0);
}

torch::Tensor groupedMm(const torch::Tensor& x, const torch::Tensor& weight, const std::vector<int64_t>& groupSizes) {
  // at::_grouped_mm(mat_a [rows, in], mat_b [G, in, out], offs [G] int32
  // cumulative ends) -> [rows, out]; mat_b is weight transposed (a
  // column-major view, which the op takes as is).
  std::vector<int32_t> ends(groupSizes.size());
  int64_t end = 0;
  for (size_t g = 0; g < groupSizes.size(); ++g) {
    end += groupSizes[g];
    MOE_ASSERT(end <= std::numeric_limits<int32_t>::max(), "grouped_mm offsets overflow int32: ", end);
    ends[g] = static_cast<int32_t>(end);
  }
  auto offs = torch::tensor(ends, torch::TensorOptions().dtype(torch::kInt).device(x.device()));
  return at::_grouped_mm(x.contiguous(), weight.contiguous().transpose(1, 2), offs);
}

}  // namespace

const char* groupedMatmulPathName(GroupedMatmulPath path) {
  return path == GroupedMatmulPath::kGroupedMm ? "grouped_mm" : "loop";
}

GroupedMatmulPath groupedMatmulPath(const torch::Tensor& x, const torch::Tensor& weight) {
  if (!x.is_cuda() || !weight.is_cuda()) return GroupedMatmulPath::kLoop;
  if (x.scalar_type() != weight.scalar_type() || !groupedMmDtype(x.scalar_type())) return GroupedMatmulPath::kLoop;
  // Both operands' leading strides are `in` elements: 16-byte aligned.
  if ((x.size(1) * static_cast<int64_t>(x.element_size())) % 16 != 0) return GroupedMatmulPath::kLoop;
  if (x.size(0) == 0 || weight.size(0) == 0) return GroupedMatmulPath::kLoop;
  return GroupedMatmulPath::kGroupedMm;
}

torch::Tensor groupedMatmul(const torch::Tensor& x, const torch::Tensor& weight,
                            const std::vector<int64_t>& groupSizes) {
  return groupedMatmul(x, weight, groupSizes, groupedMatmulPath(x, weight));
}

torch::Tensor groupedMatmul(const torch::Tensor& x, const torch::Tensor& weight,
                            const std::vector<int64_t>& groupSizes, GroupedMatmulPath path) {
  MOE_ASSERT(x.dim() == 2 && weight.dim() == 3, "x must be [rows, in], weight [G, out, in]");
  MOE_ASSERT_EQ(weight.size(0), static_cast<int64_t>(groupSizes.size()), "groups");
  MOE_ASSERT_EQ(weight.size(2), x.size(1), "inner dimension");
  const int64_t total = std::accumulate(groupSizes.begin(), groupSizes.end(), int64_t{0});
  MOE_ASSERT_EQ(total, x.size(0), "sum of group sizes vs rows");
  if (path == GroupedMatmulPath::kGroupedMm && total > 0) return groupedMm(x, weight, groupSizes);
  return loopMatmul(x, weight, groupSizes);
}

}  // namespace moe::kernels
