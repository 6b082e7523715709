#include "reference/model/partial_sums.h"

#include "kernels/grouped_matmul.h"

namespace moe::ref {

namespace {
bool narrower(torch::ScalarType a, torch::ScalarType b) { return c10::elementSize(a) < c10::elementSize(b); }
torch::ScalarType accumulateDtype(torch::ScalarType dt) {
  return dt == torch::kDouble ? torch::kDouble : torch::kFloat;
}
}  // namespace

torch::Tensor computeWeight(const torch::Tensor& master, torch::ScalarType dt) {
  if (!narrower(dt, master.scalar_type())) return master.to(dt);
  // Straight-through rounding: the value of master.to(dt), the gradient of
  // the identity.
  return master + (master.to(dt).to(master.scalar_type()) - master).detach();
}

torch::ScalarType activationDtype(const torch::Tensor& x, const PartialSums& ps) {
  return ps.wideInput && narrower(ps.computeDtype, x.scalar_type()) ? ps.computeDtype : x.scalar_type();
}

torch::Tensor project(const torch::Tensor& x, const torch::Tensor& w, const PartialSums& ps) {
  const auto dt = activationDtype(x, ps);
  const auto acc = accumulateDtype(dt);
  auto y = torch::matmul(x.to(acc), w.to(acc).t());
  return ps.wideOutput ? y : y.to(dt);
}

torch::Tensor groupedProject(const torch::Tensor& x, const torch::Tensor& w,
                            const std::vector<int64_t>& rowsPerExpert, const PartialSums& ps) {
  const auto dt = activationDtype(x, ps);
  const auto acc = accumulateDtype(dt);
  auto y = kernels::groupedMatmul(x.to(acc), w.to(acc), rowsPerExpert);
  return ps.wideOutput ? y : y.to(dt);
}

}  // namespace moe::ref
