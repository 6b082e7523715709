#include "reference/model/gpt_oss_model.h"

#include <cmath>

#include "common/error.h"
#include "kernels/permute.h"
#include "kernels/routing.h"

namespace moe::ref {
namespace {



// GptOss applies RoPE to the two halves of a head: [a, b] -> [a cos - b sin,
// b cos + a sin] with cos/sin of the d/2 frequencies, which is the
// rotate-half form with the tables of ropeTables() (frequencies repeated).
torch::Tensor applyRope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto a = x.narrow(-1, 0, half), b = x.narrow(-1, half, half);
  return x * cos + torch::cat({-b, a}, /*dim=*/-1) * sin;
}

// Row r of the result is bias[e] for the e whose group holds row r.
// bias: [L, n], rowsPerExpert: L counts -> [sum, n]
torch::Tensor biasRows(const torch::Tensor& bias, const std::vector<int64_t>& rowsPerExpert) {
  auto counts = torch::tensor(rowsPerExpert, torch::TensorOptions().dtype(torch::kLong)).to(bias.device());
  auto expertOfRow = torch::repeat_interleave(counts);
  return bias.index_select(0, expertOfRow);
}

}  // namespace

std::vector<ParamSpec> gptOssParameterSpecs(const ModelConfig& c) {
  const int64_t h = c.hiddenSize, d = c.headDim, e = c.numExperts, m = c.moeIntermediateSize;
  const int64_t q = c.numAttentionHeads * d, kv = c.numKeyValueHeads * d;
  std::vector<ParamSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocabSize, h}});
  for (int64_t i = 0; i < c.numHiddenLayers; ++i) {
    const std::string p = layerPrefix(i);
    specs.push_back({p + "self_attn.sinks", {c.numAttentionHeads}});
    specs.push_back({p + "self_attn.q_proj.weight", {q, h}});
    specs.push_back({p + "self_attn.q_proj.bias", {q}});
    specs.push_back({p + "self_attn.k_proj.weight", {kv, h}});
    specs.push_back({p + "self_attn.k_proj.bias", {kv}});
    specs.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    specs.push_back({p + "self_attn.v_proj.bias", {kv}});
    specs.push_back({p + "self_attn.o_proj.weight", {h, q}});
    specs.push_back({p + "self_attn.o_proj.bias", {h}});
    specs.push_back({p + "mlp.router.weight", {e, h}});
    specs.push_back({p + "mlp.router.bias", {e}});
    specs.push_back({p + "mlp.experts.gate_up_proj", {e, h, 2 * m}});
    specs.push_back({p + "mlp.experts.gate_up_proj_bias", {e, 2 * m}});
    specs.push_back({p + "mlp.experts.down_proj", {e, m, h}});
    specs.push_back({p + "mlp.experts.down_proj_bias", {e, h}});
    specs.push_back({p + "input_layernorm.weight", {h}});
    specs.push_back({p + "post_attention_layernorm.weight", {h}});
  }
  specs.push_back({"model.norm.weight", {h}});
  if (!c.tieWordEmbeddings) specs.push_back({"lm_head.weight", {c.vocabSize, h}});
  return specs;
}

torch::Tensor gptOssRmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  const auto dt = x.scalar_type(), st = kernels::routingDtype(dt);
  auto xs = x.to(st);
  auto normed = xs * torch::rsqrt(xs.pow(2).mean(/*dim=*/-1, /*keepdim=*/true) + eps);
  // The weight as the compute dtype holds it (straight-through for an fp32
  // master), multiplied in fp32 with the unrounded normed value.
  return (computeWeight(weight, dt).to(st) * normed).to(dt);
}

torch::Tensor projectBias(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                          const PartialSums& ps) {
  const auto dt = activationDtype(x, ps);
  auto y = project(x, w, {ps.wideInput, /*wideOutput=*/true, ps.computeDtype});
  if (b.defined()) y = y + b.to(y.scalar_type());
  return ps.wideOutput ? y : y.to(dt);
}

torch::Tensor clampedSwiglu(const torch::Tensor& gateUp, double alpha, double limit) {
  const int64_t n = gateUp.size(-1);
  MOE_ASSERT(n % 2 == 0, "interleaved gate_up width must be even, got ", n);
  using torch::indexing::Slice;
  auto gate = gateUp.index({"...", Slice(0, n, 2)}).clamp_max(limit);
  auto up = gateUp.index({"...", Slice(1, n, 2)}).clamp(-limit, limit);
  auto glu = gate * torch::sigmoid(gate * alpha);
  return (up + 1) * glu;
}

torch::Tensor gptOssGroupedExperts(const torch::Tensor& xPerm,
                                   const std::vector<int64_t>& numTokensPerLocalExpert,
                                   const GptOssExperts& experts, const ModelConfig& config,
                                   const PartialSums& partialSums) {
  const int64_t inter = experts.down.size(1);
  MOE_ASSERT_EQ(experts.gateUp.size(2), 2 * inter, "gate_up_proj columns vs 2 * down_proj rows");
  const auto dt = activationDtype(xPerm, partialSums);
  // [L, H, 2I] is [L, in, out]: the grouped matmul takes [L, out, in].
  auto gateUp = groupedProject(xPerm, experts.gateUp.transpose(1, 2), numTokensPerLocalExpert,
                               {partialSums.wideInput, /*wideOutput=*/true, partialSums.computeDtype});
  gateUp = (gateUp + biasRows(experts.gateUpBias, numTokensPerLocalExpert).to(gateUp.scalar_type())).to(dt);
  auto h = clampedSwiglu(gateUp, config.swigluAlpha, config.swigluLimit);
  auto y = groupedProject(h, experts.down.transpose(1, 2), numTokensPerLocalExpert,
                          {/*wideInput=*/false, /*wideOutput=*/true, partialSums.computeDtype});
  if (experts.downBias.defined())
    y = y + biasRows(experts.downBias, numTokensPerLocalExpert).to(y.scalar_type());
  return partialSums.wideOutput ? y : y.to(dt);
}

torch::Tensor gptOssLoopExperts(const torch::Tensor& x, const torch::Tensor& topkIdx,
                                const torch::Tensor& topkWeights, const GptOssExperts& experts,
                                const ModelConfig& config) {
  const int64_t numLocal = experts.gateUp.size(0);
  auto out = torch::zeros_like(x);
  auto weights = topkWeights.to(x.scalar_type());
  for (int64_t e = 0; e < numLocal; ++e) {
    // nonzero() lists (token, slot) pairs in token order.
    auto hits = topkIdx.eq(experts.firstExpert + e).nonzero();  // [n, 2]
    if (hits.size(0) == 0) continue;
    auto tokens = hits.select(1, 0), slots = hits.select(1, 1);
    auto gu = projectBias(x.index_select(0, tokens), experts.gateUp[e].t(), experts.gateUpBias[e]);
    auto h = clampedSwiglu(gu, config.swigluAlpha, config.swigluLimit);
    auto y = projectBias(h, experts.down[e].t(),
                         experts.downBias.defined() ? experts.downBias[e] : torch::Tensor());
    out = out.index_add(0, tokens, y * weights.index({tokens, slots}).unsqueeze(1));
  }
  return out;
}

RouterOutput gptOssRoute(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                         const ModelConfig& config) {
  RouterOutput r;
  r.logits = projectBias(x, weight, bias);
  r.routing = kernels::topkRoute(r.logits, {/*topK=*/config.numExpertsPerTok, /*normTopkProb=*/true});
  return r;
}

torch::Tensor gptOssAttention(const torch::Tensor& x, const ParamMap& params, int64_t layer,
                              const ModelConfig& config, torch::ScalarType dtype,
                              const GptOssAttentionOptions& options) {
  const PartialSums& ps = options.partialSums;
  const PartialSums in{ps.wideInput, /*wideOutput=*/false, dtype};
  const std::string prefix = layerPrefix(layer) + "self_attn.";
  auto w = [&](const char* n) { return computeWeight(getParam(params, prefix + n), dtype); };
  const int64_t b = x.size(0), s = x.size(1), d = config.headDim;
  auto wq = w("q_proj.weight"), wk = w("k_proj.weight");
  const int64_t numHeads = wq.size(0) / d, numKv = wk.size(0) / d;
  MOE_ASSERT(numKv > 0 && numHeads % numKv == 0, "heads ", numHeads, " kv heads ", numKv);
  auto q = projectBias(x, wq, w("q_proj.bias"), in).view({b, s, numHeads, d}).transpose(1, 2);
  auto k = projectBias(x, wk, w("k_proj.bias"), in).view({b, s, numKv, d}).transpose(1, 2);
  auto v = projectBias(x, w("v_proj.weight"), w("v_proj.bias"), in).view({b, s, numKv, d}).transpose(1, 2);
  auto [cosHost, sinHost] = ropeTables(s, d, config.ropeTheta, dtype);
  auto cos = cosHost.to(x.device()), sin = sinHost.to(x.device());
  q = applyRope(q, cos, sin);
  k = applyRope(k, cos, sin);
  const int64_t groups = numHeads / numKv;
  k = k.repeat_interleave(groups, /*dim=*/1);
  v = v.repeat_interleave(groups, /*dim=*/1);
  auto scores = torch::matmul(q, k.transpose(2, 3)) * (1.0 / std::sqrt(static_cast<double>(d)));
  // Masked: keys after the query, and on a sliding layer keys at least
  // sliding_window positions before it.
  auto opts = torch::TensorOptions().dtype(torch::kLong).device(x.device());
  auto pos = torch::arange(s, opts);
  auto lag = pos.unsqueeze(1) - pos.unsqueeze(0);  // [S_q, S_k]: t - s
  auto masked = lag.lt(0);
  if (config.layerTypes.at(static_cast<size_t>(layer)) == kSlidingAttention)
    masked = masked.logical_or(lag.ge(config.slidingWindow));
  const auto st = kernels::routingDtype(dtype);
  auto sinks = w("sinks").to(st).view({1, numHeads, 1, 1}).expand({b, numHeads, s, 1});
  auto logits = torch::cat({scores.to(st).masked_fill(masked, -INFINITY), sinks}, /*dim=*/-1);
  auto probs = torch::softmax(logits, /*dim=*/-1).narrow(-1, 0, s).to(dtype);  // the sink column dropped
  auto ctx = torch::matmul(probs, v).transpose(1, 2).reshape({b, s, numHeads * d});
  return projectBias(ctx, w("o_proj.weight"), options.addOutputBias ? w("o_proj.bias") : torch::Tensor(),
                     {/*wideInput=*/false, ps.wideOutput, dtype});
}

ModelOutput gptOssForwardModel(const ModelConfig& config, const ParamMap& params,
                               const torch::Tensor& inputIds, const ForwardOptions& options) {
  const auto dtype = options.computeDtype;
  const int64_t b = inputIds.size(0), s = inputIds.size(1), hidden = config.hiddenSize;
  auto w = [&](const std::string& n) { return computeWeight(getParam(params, n), dtype); };
  const double eps = config.rmsNormEps;
  ModelOutput out;
  auto embed = w("model.embed_tokens.weight");
  auto h = embed.index_select(0, inputIds.reshape({-1})).view({b, s, hidden}).to(dtype);
  for (int64_t i = 0; i < config.numHiddenLayers; ++i) {
    const std::string p = layerPrefix(i);
    h = h + gptOssAttention(gptOssRmsNorm(h, getParam(params, p + "input_layernorm.weight"), eps), params,
                            i, config, dtype);
    auto x = gptOssRmsNorm(h, getParam(params, p + "post_attention_layernorm.weight"), eps)
                 .view({b * s, hidden});
    auto router = gptOssRoute(x, w(p + "mlp.router.weight"), w(p + "mlp.router.bias"), config);
    const auto& routing = router.routing;
    GptOssExperts ex{w(p + "mlp.experts.gate_up_proj"), w(p + "mlp.experts.gate_up_proj_bias"),
                     w(p + "mlp.experts.down_proj"), w(p + "mlp.experts.down_proj_bias"),
                     /*firstExpert=*/0};
    torch::Tensor mlp;
    if (config.expertsImplementation == "loop") {
      mlp = gptOssLoopExperts(x, routing.topkIdx, routing.topkWeights, ex, config);
    } else {
      auto plan = kernels::makePermutePlan(routing.topkIdx, config.numExperts);
      auto y = gptOssGroupedExperts(kernels::permuteTokens(x, plan), plan.numTokensPerExpertHost, ex, config);
      mlp = combineExpertOutputs(y, plan, routing.topkWeights, /*fp32Combine=*/false);
    }
    out.routerLogits.push_back(router.logits);
    h = h + mlp.view({b, s, hidden});
  }
  h = gptOssRmsNorm(h, getParam(params, "model.norm.weight"), eps);
  auto head = config.tieWordEmbeddings ? embed : w("lm_head.weight");
  out.logits = project(h, head);
  return out;
}

}  // namespace moe::ref
