#include "reference/model/partial_sums.h"

namespace moe::ref {

torch::Tensor projectIn(const torch::Tensor& x, const torch::Tensor& w, const PartialSums& ps) {
  if (!ps.wideInput || x.scalar_type() == w.scalar_type()) return torch::matmul(x, w.t());
  return torch::matmul(x, w.to(x.scalar_type()).t()).to(w.scalar_type());
}

torch::Tensor projectOut(const torch::Tensor& x, const torch::Tensor& w, const PartialSums& ps) {
  if (!ps.wideOutput || w.scalar_type() == torch::kFloat || w.scalar_type() == torch::kDouble)
    return torch::matmul(x, w.t());
  return torch::matmul(x.to(torch::kFloat), w.to(torch::kFloat).t());
}

}  // namespace moe::ref
