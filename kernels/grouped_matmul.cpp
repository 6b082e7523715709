#include "kernels/grouped_matmul.h"

#include <numeric>

#include "common/error.h"

namespace moe::kernels {

torch::Tensor groupedMatmul(const torch::Tensor& x, const torch::Tensor& weight,
                            const std::vector<int64_t>& groupSizes) {
  MOE_ASSERT(x.dim() == 2 && weight.dim() == 3, "x must be [rows, in], weight [G, out, in]");
  MOE_ASSERT_EQ(weight.size(0), static_cast<int64_t>(groupSizes.size()), "groups");
  MOE_ASSERT_EQ(weight.size(2), x.size(1), "inner dimension");
  const int64_t total = std::accumulate(groupSizes.begin(), groupSizes.end(), int64_t{0});
  MOE_ASSERT_EQ(total, x.size(0), "sum of group sizes vs rows");
  // CPU reference: one matmul per group. Autograd through split/matmul/cat
  // gives the grouped backward (dx per group, dW_g = dy_g^T x_g).
  auto pieces = x.split_with_sizes(groupSizes, /*dim=*/0);
  std::vector<torch::Tensor> outs;
  outs.reserve(pieces.size());
  for (size_t g = 0; g < pieces.size(); ++g)
    outs.push_back(torch::matmul(pieces[g], weight[static_cast<int64_t>(g)].t()));
  if (outs.empty()) return x.new_zeros({0, weight.size(1)});
  return torch::cat(outs, /*dim=*/0);
}

}  // namespace moe::kernels
