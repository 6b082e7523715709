#include "reference/model/deepseek_v3.h"

#include <cmath>

#include "common/error.h"
#include "kernels/routing.h"
#include "reference/model/qwen3_moe.h"

namespace moe::ref {
namespace {

const std::string kBiasSuffix = "mlp.gate.e_score_correction_bias";


// Hugging Face's apply_rotary_pos_emb (rotate-half) or, for rope_interleave,
// apply_rotary_pos_emb_interleave: pairs (x0, x1), (x2, x3), ... rotated by
// one angle each and written de-interleaved (evens' results, then odds'), as
// Hugging Face does; q and k get the same permutation, so q.k is unchanged.
// x: [B, heads, S, d], cos/sin: [S, d] (cat(freqs, freqs))
torch::Tensor applyRotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                          bool interleave) {
  const int64_t d = x.size(-1), half = d / 2;
  if (!interleave) {
    auto rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, /*dim=*/-1);
    return x * cos + rotated * sin;
  }
  auto c = cos.narrow(-1, 0, half), s = sin.narrow(-1, 0, half);
  using torch::indexing::Slice;
  auto x1 = x.index({"...", Slice(0, torch::indexing::None, 2)});
  auto x2 = x.index({"...", Slice(1, torch::indexing::None, 2)});
  return torch::cat({x1 * c - x2 * s, x2 * c + x1 * s}, /*dim=*/-1);
}

}  // namespace

torch::Tensor latentAttentionForward(const torch::Tensor& x, const ParamMap& params,
                                     const std::string& prefix, const ModelConfig& config,
                                     torch::ScalarType dtype, const PartialSums& partialSums) {
  auto w = [&](const char* n) { return computeWeight(getParam(params, prefix + "self_attn." + n), dtype); };
  auto norm = [&](const char* n) { return getParam(params, prefix + "self_attn." + n); };
  const PartialSums in{partialSums.wideInput, /*wideOutput=*/false, dtype};
  const int64_t b = x.size(0), s = x.size(1);
  const int64_t nope = config.qkNopeHeadDim, rope = config.qkRopeHeadDim, vd = config.vHeadDim;
  const int64_t qkHead = nope + rope, kvr = config.kvLoraRank;
  torch::Tensor q;
  if (config.qLoraRank > 0) {
    auto qa = rmsNorm(project(x, w("q_a_proj.weight"), in), norm("q_a_layernorm.weight"), kLatentNormEps);
    q = project(qa, w("q_b_proj.weight"));
  } else {
    q = project(x, w("q_proj.weight"), in);
  }
  MOE_ASSERT(q.size(-1) % qkHead == 0, "q rows ", q.size(-1), " vs head dim ", qkHead);
  const int64_t heads = q.size(-1) / qkHead;
  q = q.view({b, s, heads, qkHead}).transpose(1, 2);  // [B, nh, S, nope+rope]
  auto qPass = q.narrow(-1, 0, nope), qRot = q.narrow(-1, nope, rope);
  auto compressed = project(x, w("kv_a_proj_with_mqa.weight"), in);  // [B, S, kvr+rope]
  auto latent = rmsNorm(compressed.narrow(-1, 0, kvr), norm("kv_a_layernorm.weight"), kLatentNormEps);
  auto kRot = compressed.narrow(-1, kvr, rope).reshape({b, 1, s, rope});
  auto [cosHost, sinHost] = ropeTables(s, rope, config.ropeTheta, dtype);
  auto cos = cosHost.to(x.device()), sin = sinHost.to(x.device());
  qRot = applyRotary(qRot, cos, sin, config.ropeInterleave);
  kRot = applyRotary(kRot, cos, sin, config.ropeInterleave);
  auto query = torch::cat({qPass, qRot}, /*dim=*/-1);
  auto kv = project(latent, w("kv_b_proj.weight")).view({b, s, heads, nope + vd}).transpose(1, 2);
  auto kNope = kv.narrow(-1, 0, nope), value = kv.narrow(-1, nope, vd);
  auto key = torch::cat({kNope, kRot.expand({b, heads, s, rope})}, /*dim=*/-1);
  // Hugging Face: self.qk_head_dim ** (-0.5), a Python float power.
  const double scale = std::pow(static_cast<double>(qkHead), -0.5);
  auto scores = torch::matmul(query, key.transpose(2, 3)) * scale;
  auto future = torch::ones({s, s}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(/*diagonal=*/1);
  auto probs = torch::softmax(scores.to(kernels::routingDtype(dtype)).masked_fill(future, -INFINITY), /*dim=*/-1)
                   .to(dtype);
  auto ctx = torch::matmul(probs, value).transpose(1, 2).reshape({b, s, heads * vd});
  return project(ctx, w("o_proj.weight"), {/*wideInput=*/false, partialSums.wideOutput, dtype});
}

void appendLatentAttentionSpecs(const ModelConfig& c, const std::string& p,
                                std::vector<ParamSpec>& specs) {
  const int64_t h = c.hiddenSize, nh = c.numAttentionHeads;
  const int64_t qkHead = c.qkNopeHeadDim + c.qkRopeHeadDim;
  const std::string a = p + "self_attn.";
  if (c.qLoraRank > 0) {
    specs.push_back({a + "q_a_proj.weight", {c.qLoraRank, h}});
    specs.push_back({a + "q_a_layernorm.weight", {c.qLoraRank}});
    specs.push_back({a + "q_b_proj.weight", {nh * qkHead, c.qLoraRank}});
  } else {
    specs.push_back({a + "q_proj.weight", {nh * qkHead, h}});
  }
  specs.push_back({a + "kv_a_proj_with_mqa.weight", {c.kvLoraRank + c.qkRopeHeadDim, h}});
  specs.push_back({a + "kv_a_layernorm.weight", {c.kvLoraRank}});
  specs.push_back({a + "kv_b_proj.weight", {nh * (c.qkNopeHeadDim + c.vHeadDim), c.kvLoraRank}});
  specs.push_back({a + "o_proj.weight", {h, nh * c.vHeadDim}});
}

std::string correctionBiasName(int64_t layer) { return layerPrefix(layer) + kBiasSuffix; }

bool isCorrectionBias(const std::string& name) {
  return name.size() > kBiasSuffix.size() &&
         name.compare(name.size() - kBiasSuffix.size(), kBiasSuffix.size(), kBiasSuffix) == 0;
}

torch::Tensor groupLimitedTopk(const torch::Tensor& choice, int64_t nGroup, int64_t topkGroup,
                               int64_t topK, const torch::Tensor& groupExperts) {
  torch::NoGradGuard noGrad;
  const int64_t t = choice.size(0), e = choice.size(1);
  MOE_ASSERT(e % nGroup == 0 && e / nGroup >= 2, "experts ", e, " groups ", nGroup);
  auto c = choice.detach();
  auto seen = groupExperts.defined() ? c.masked_fill(groupExperts.logical_not().view({1, e}), -INFINITY) : c;
  auto grouped = seen.view({t, nGroup, e / nGroup});
  // The two best of each group, best first, summed (Hugging Face: topk(2).sum).
  auto best2 = kernels::stableTopkIndices(grouped.reshape({t * nGroup, e / nGroup}), 2);
  auto top2 = grouped.reshape({t * nGroup, e / nGroup}).gather(1, best2);
  auto groupScores = (top2.select(1, 0) + top2.select(1, 1)).view({t, nGroup});
  auto groups = kernels::stableTopkIndices(groupScores, topkGroup);  // [T, topk_group]
  auto keep = torch::zeros({t, nGroup}, torch::TensorOptions().dtype(torch::kBool).device(c.device()))
                  .scatter(1, groups, true);
  auto expertKeep = keep.unsqueeze(-1).expand({t, nGroup, e / nGroup}).reshape({t, e});
  auto masked = c.masked_fill(expertKeep.logical_not(), -INFINITY);
  return kernels::stableTopkIndices(masked, topK);
}

RouterOutput biasCorrectedRoute(const torch::Tensor& x, const torch::Tensor& routerWeight,
                                const torch::Tensor& bias, const ModelConfig& config,
                                const torch::Tensor& groupExperts) {
  MOE_ASSERT(bias.defined(), "the bias-corrected router needs mlp.gate.e_score_correction_bias");
  const auto sd = kernels::routingDtype(x.scalar_type());
  RouterOutput r;
  r.logits = torch::linear(x.to(sd), routerWeight.to(sd));  // [T, E]
  auto scores = torch::sigmoid(r.logits);
  auto choice = scores.detach() + bias.detach().to(sd);
  r.routing.probs = scores;
  r.routing.topkIdx =
      groupLimitedTopk(choice, config.nGroup, config.topkGroup, config.numExpertsPerTok, groupExperts);
  auto weights = scores.gather(/*dim=*/1, r.routing.topkIdx);
  if (config.normTopkProb) weights = weights / (weights.sum(-1, /*keepdim=*/true) + 1e-20);
  r.routing.topkWeights = weights * config.routedScalingFactor;
  return r;
}

torch::Tensor expertLoads(const torch::Tensor& topkIdx, int64_t numExperts) {
  torch::NoGradGuard noGrad;
  return torch::bincount(topkIdx.reshape({-1}).to(torch::kLong), /*weights=*/{}, numExperts)
      .to(torch::kFloat);
}

void applyBiasUpdate(torch::Tensor& bias, const torch::Tensor& load, double speed) {
  torch::NoGradGuard noGrad;
  MOE_ASSERT_EQ(bias.numel(), load.numel(), "correction bias vs expert loads");
  auto l = load.to(torch::kDouble).to(bias.device());
  auto mean = l.sum() / static_cast<double>(l.numel());
  bias.add_((torch::sign(mean - l) * speed).to(bias.scalar_type()));
}

void updateCorrectionBiases(const ModelConfig& config, ParamMap& params,
                            const std::vector<torch::Tensor>& loads) {
  size_t j = 0;
  for (int64_t i = 0; i < config.numHiddenLayers; ++i) {
    if (!config.isMoeLayer(i)) continue;
    MOE_ASSERT(j < loads.size(), "expert loads of ", loads.size(), " MoE layers, need layer ", i);
    torch::Tensor* bias = params.find(correctionBiasName(i));
    if (bias == nullptr) fail("model: parameter ", correctionBiasName(i), " is missing");
    applyBiasUpdate(*bias, loads[j++], config.biasUpdateSpeed);
  }
}

}  // namespace moe::ref
