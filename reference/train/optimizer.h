#pragma once
// AdamW and global-norm gradient clipping with exactly PyTorch 1.13's
// semantics (torch.optim.AdamW single-tensor path, amsgrad=False,
// maximize=False; torch.nn.utils.clip_grad_norm_ with norm_type=2).
#include <torch/torch.h>

#include <string>
#include <vector>

namespace moe::ref {

// Defaults are torch.optim.AdamW's.
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weightDecay = 1e-2;  // decoupled, applied to every parameter
};

// Per step, for each parameter p with gradient g (state m, v, step t):
//   p *= 1 - lr*wd;  m = m*b1 + g*(1-b1);  v = v*b2 + g*g*(1-b2)
//   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
// Parameters, gradients and state are fp32 masters (any floating dtype works;
// the state takes the parameter's dtype).
class AdamW {
 public:
  explicit AdamW(AdamWOptions options) : options_(options) {}

  // params[i] is updated in place (no autograd) from grads[i] (same shape).
  void step(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& grads);

  int64_t stepCount() const { return step_; }
  const AdamWOptions& options() const { return options_; }
  const std::vector<torch::Tensor>& expAvg() const { return expAvg_; }
  const std::vector<torch::Tensor>& expAvgSq() const { return expAvgSq_; }
  // Resume from a checkpoint: the state after `step` steps. expAvg[i] and
  // expAvgSq[i] are shaped like the params of the next step() (taken as
  // given, not copied); step 0 with empty moments is a fresh optimizer.
  void setState(int64_t step, std::vector<torch::Tensor> expAvg, std::vector<torch::Tensor> expAvgSq);

 private:
  // One update of p (in place), m, v from g: equal-shaped views.
  void updateBlock(const torch::Tensor& p, const torch::Tensor& g, const torch::Tensor& m,
                   const torch::Tensor& v, double stepSize, double biasCorrection2Sqrt) const;

  AdamWOptions options_;
  int64_t step_ = 0;
  std::vector<torch::Tensor> expAvg_, expAvgSq_;
};

// clip_grad_norm_(grads, maxNorm): total = ||(||g_i||_2)_i||_2;
// coef = maxNorm / (total + 1e-6); every g_i *= min(coef, 1) in place.
// Returns the total norm before clipping (fp32 when the grads are fp32).
// maxNorm <= 0 disables clipping (the norm is still returned).
double clipGradNorm(const std::vector<torch::Tensor>& grads, double maxNorm);

}  // namespace moe::ref
