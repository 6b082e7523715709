#include "reference/model/qwen3_moe.h"

#include <cmath>

#include "common/error.h"
#include "kernels/routing.h"
#include "reference/model/deepseek_v3.h"
#include "reference/model/family.h"
#include "reference/model/gpt_oss_model.h"
#include "reference/model/moe_block.h"

namespace moe::ref {
namespace {

// The dtype of "fp32 statistics": fp32, but fp64 stays fp64.

torch::Tensor rotateHalf(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, /*dim=*/-1);
}

}  // namespace

torch::Tensor rmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  auto xs = x.to(kernels::routingDtype(x.scalar_type()));
  auto var = xs.pow(2).mean(/*dim=*/-1, /*keepdim=*/true);
  const auto dt = x.scalar_type();
  auto normed = (xs * torch::rsqrt(var + eps)).to(dt);
  if (weight.scalar_type() == dt || !isFloatingType(weight.scalar_type()) ||
      c10::elementSize(weight.scalar_type()) <= c10::elementSize(dt))
    return weight.to(dt) * normed;
  // A wider (fp32 master) weight under a narrower compute dtype. The value is
  // the compute-dtype product HF forms (weight.to(dt) * normed): the product
  // of two bf16 numbers is exact in fp32, so rounding it once gives the same
  // bits. Rounding the weight straight-through keeps its gradient in fp32:
  // a norm weight's gradient is a sum over every token (and head) that
  // largely cancels, and under tensor/sequence parallelism each rank holds a
  // partial sum; rounding those partials to bf16 before they are summed
  // costs percent-level relative error the single-device run does not have.
  auto rounded = weight + (weight.to(dt).to(weight.scalar_type()) - weight).detach();
  return (rounded * normed.to(weight.scalar_type())).to(dt);
}

std::pair<torch::Tensor, torch::Tensor> ropeTables(int64_t seqLen, int64_t headDim, double theta,
                                                   torch::ScalarType dtype) {
  // HF: inv_freq = 1 / theta^(arange(0, d, 2) / d) in fp32; angles pos * inv_freq.
  auto f32 = torch::TensorOptions().dtype(torch::kFloat);
  auto invFreq = 1.0 / torch::pow(theta, torch::arange(0, headDim, 2, f32) / static_cast<double>(headDim));
  auto freqs = torch::outer(torch::arange(seqLen, f32), invFreq);  // [S, d/2]
  auto emb = torch::cat({freqs, freqs}, /*dim=*/-1);                // [S, d]
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

torch::Tensor attentionForward(const torch::Tensor& x, const ParamMap& params,
                               const std::string& prefix, const ModelConfig& config,
                               torch::ScalarType dtype, const PartialSums& partialSums) {
  auto w = [&](const char* n) { return computeWeight(getParam(params, prefix + n), dtype); };
  const PartialSums in{partialSums.wideInput, /*wideOutput=*/false, dtype};
  const int64_t b = x.size(0), s = x.size(1), d = config.headDim;
  auto wq = w("self_attn.q_proj.weight"), wk = w("self_attn.k_proj.weight");
  const int64_t numHeads = wq.size(0) / d, numKv = wk.size(0) / d;
  MOE_ASSERT(numKv > 0 && numHeads % numKv == 0, "heads ", numHeads, " kv heads ", numKv);
  // [B, S, heads, d] -> per-head norm -> [B, heads, S, d]
  auto q = project(x, wq, in).view({b, s, numHeads, d});
  auto k = project(x, wk, in).view({b, s, numKv, d});
  if (familyOf(config).qkNorm()) {
    q = rmsNorm(q, getParam(params, prefix + "self_attn.q_norm.weight"), config.rmsNormEps);
    k = rmsNorm(k, getParam(params, prefix + "self_attn.k_norm.weight"), config.rmsNormEps);
  }
  q = q.transpose(1, 2);
  k = k.transpose(1, 2);
  auto v = project(x, w("self_attn.v_proj.weight"), in).view({b, s, numKv, d}).transpose(1, 2);
  // The tables are computed on the host (the same numbers on every device)
  // and moved to the activations' device.
  auto [cosHost, sinHost] = ropeTables(s, d, config.ropeTheta, dtype);
  auto cos = cosHost.to(x.device()), sin = sinHost.to(x.device());
  q = q * cos + rotateHalf(q) * sin;
  k = k * cos + rotateHalf(k) * sin;
  // GQA: query head h reads kv head h / (numHeads / numKv).
  const int64_t groups = numHeads / numKv;
  k = k.repeat_interleave(groups, /*dim=*/1);
  v = v.repeat_interleave(groups, /*dim=*/1);
  auto scores = torch::matmul(q, k.transpose(2, 3)) * (1.0 / std::sqrt(static_cast<double>(d)));
  auto future = torch::ones({s, s}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(/*diagonal=*/1);
  auto probs = torch::softmax(scores.to(kernels::routingDtype(dtype)).masked_fill(future, -INFINITY), /*dim=*/-1)
                   .to(dtype);
  auto ctx = torch::matmul(probs, v).transpose(1, 2).reshape({b, s, numHeads * d});
  return project(ctx, w("self_attn.o_proj.weight"), {/*wideInput=*/false, partialSums.wideOutput, dtype});
}

ModelOutput forwardModel(const ModelConfig& config, const ParamMap& params,
                         const torch::Tensor& inputIds, const ForwardOptions& options) {
  if (inputIds.dim() != 2 || inputIds.scalar_type() != torch::kLong)
    fail("model: input ids must be a [B, S] int64 tensor, got ", inputIds.sizes(), " ",
         inputIds.scalar_type());
  if (familyOf(config).gptOssLayers()) return gptOssForwardModel(config, params, inputIds, options);
  const auto dtype = options.computeDtype;
  const int64_t b = inputIds.size(0), s = inputIds.size(1), hidden = config.hiddenSize;
  auto w = [&](const std::string& n) { return computeWeight(getParam(params, n), dtype); };
  ModelOutput out;
  auto embed = w("model.embed_tokens.weight");
  auto h = embed.index_select(0, inputIds.reshape({-1})).view({b, s, hidden}).to(dtype);
  for (int64_t i = 0; i < config.numHiddenLayers; ++i) {
    const std::string p = layerPrefix(i);
    auto normed = rmsNorm(h, getParam(params, p + "input_layernorm.weight"), config.rmsNormEps);
    h = h + (familyOf(config).latentAttention()
                 ? latentAttentionForward(normed, params, p, config, dtype)
                 : attentionForward(normed, params, p, config, dtype));
    auto x = rmsNorm(h, getParam(params, p + "post_attention_layernorm.weight"), config.rmsNormEps)
                 .view({b * s, hidden});
    torch::Tensor mlp;
    if (config.isMoeLayer(i)) {
      MoeBlockWeights mw;
      mw.router = w(p + "mlp.gate.weight");
      mw.experts = {w(p + "mlp.experts.gate_up_proj"), w(p + "mlp.experts.down_proj"),
                    /*firstExpert=*/0};
      if (config.sharedExpertIntermediateSize > 0) {
        mw.sharedGate = w(p + "mlp.shared_expert.gate_proj.weight");
        mw.sharedUp = w(p + "mlp.shared_expert.up_proj.weight");
        mw.sharedDown = w(p + "mlp.shared_expert.down_proj.weight");
        mw.sharedExpertGate = w(p + "mlp.shared_expert_gate.weight");
      }
      if (familyOf(config).biasCorrectedRouter()) {  // deepseek_v3
        // Hugging Face keeps gate.weight (and the bias) in fp32 under bf16.
        mw.router = getParam(params, p + "mlp.gate.weight");
        mw.correctionBias = getParam(params, correctionBiasName(i));
      }
      if (config.nSharedExperts > 0) {  // deepseek_v3: ungated shared experts
        mw.sharedGate = w(p + "mlp.shared_experts.gate_proj.weight");
        mw.sharedUp = w(p + "mlp.shared_experts.up_proj.weight");
        mw.sharedDown = w(p + "mlp.shared_experts.down_proj.weight");
      }
      auto block = moeBlockForward(x, mw, config);
      mlp = block.out;
      out.routerLogits.push_back(block.routerLogits);
      out.expertLoads.push_back(expertLoads(block.topkIdx, config.numExperts));
    } else {
      mlp = swiglu(x, w(p + "mlp.gate_proj.weight"), w(p + "mlp.up_proj.weight"),
                   w(p + "mlp.down_proj.weight"));
    }
    h = h + mlp.view({b, s, hidden});
  }
  h = rmsNorm(h, getParam(params, "model.norm.weight"), config.rmsNormEps);
  auto head = config.tieWordEmbeddings ? embed : w("lm_head.weight");
  out.logits = project(h, head);
  return out;
}

torch::Tensor causalLmCrossEntropy(const torch::Tensor& logits, const torch::Tensor& inputIds) {
  const int64_t b = logits.size(0), s = logits.size(1), v = logits.size(2);
  MOE_ASSERT(s >= 2, "need at least 2 positions for next-token loss, got ", s);
  auto pred = logits.narrow(1, 0, s - 1).reshape({b * (s - 1), v}).to(kernels::routingDtype(logits.scalar_type()));
  auto target = inputIds.narrow(1, 1, s - 1).reshape({b * (s - 1)});
  return torch::nll_loss(torch::log_softmax(pred, /*dim=*/-1), target);  // mean reduction
}

RouterAuxStats routerAuxStats(const std::vector<torch::Tensor>& routerLogits, int64_t topK) {
  MOE_ASSERT(!routerLogits.empty(), "routerAuxStats needs at least one MoE layer");
  auto logits = torch::cat(routerLogits, /*dim=*/0);
  auto probs = torch::softmax(logits.to(kernels::routingDtype(logits.scalar_type())), /*dim=*/-1);  // [N, E]
  RouterAuxStats st;
  st.numTokens = logits.size(0);
  st.probSums = probs.sum(/*dim=*/0);
  auto topkIdx = kernels::stableTopkIndices(probs, topK);  // [N, k]
  st.selectionCounts =
      torch::one_hot(topkIdx, probs.size(1)).to(probs.scalar_type()).sum(/*dim=*/0);  // [k, E]
  return st;
}

torch::Tensor loadBalancingLoss(const RouterAuxStats& st) {
  const double n = static_cast<double>(st.numTokens);
  auto tokensPerExpert = st.selectionCounts / n;  // [k, E]
  auto routerProbPerExpert = st.probSums / n;     // [E]
  const int64_t numExperts = st.probSums.size(0);
  return (tokensPerExpert * routerProbPerExpert.unsqueeze(0)).sum() * static_cast<double>(numExperts);
}

LossParts computeLoss(const ModelConfig& config, const ModelOutput& output,
                      const torch::Tensor& inputIds) {
  LossParts parts;
  parts.ce = causalLmCrossEntropy(output.logits, inputIds);
  if (output.routerLogits.empty() || !familyOf(config).routerAuxLoss()) {
    parts.aux = torch::zeros({}, parts.ce.options());
  } else {
    parts.aux = loadBalancingLoss(routerAuxStats(output.routerLogits, config.numExpertsPerTok))
                    .to(parts.ce.scalar_type());
  }
  parts.loss = parts.ce + config.routerAuxLossCoef * parts.aux;
  return parts;
}

}  // namespace moe::ref
