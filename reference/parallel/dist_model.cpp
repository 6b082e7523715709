#include "reference/parallel/dist_model.h"

#include <cmath>

#include "harness/comm/flight_recorder.h"
#include "common/error.h"
#include "kernels/permute.h"
#include "reference/model/deepseek_v3.h"
#include "reference/model/family.h"
#include "reference/model/gpt_oss_model.h"
#include "reference/model/moe_block.h"
#include "reference/model/qwen3_moe.h"
#include "reference/mutants/mutation_points.h"
#include "reference/parallel/comm_ops.h"
#include "reference/parallel/ep_dispatch.h"
#include "reference/parallel/layer_plan.h"
#include "reference/parallel/step_comm.h"
#include "reference/placement/dist_tensor.h"
#include "reference/placement/layout.h"

namespace moe::parallel {

using plan::AppliedPlan;
using ref::ParamMap;
using ref::Placement;

ParamMap distributeParams(const AppliedPlan& plan, mesh::DeviceMesh& mesh, const ParamMap& full) {
  ParamMap out;
  for (const auto& p : plan.params) {
    auto dt = ref::DistTensor::distribute(ref::getParam(full, p.name).to(torch::kFloat), mesh,
                                          p.placements);
    out.insert(p.name, dt.local().clone());
  }
  return out;
}

ParamMap loadLocalParams(const AppliedPlan& plan, mesh::DeviceMesh& mesh,
                         const io::TensorSource& source) {
  ParamMap out;
  for (const auto& p : plan.params) {
    auto placements = p.placements;
    if (auto f = mutants::points().loaderPlacements) f(p, placements);
    auto dt = ref::DistTensor::distributeFromSource(p.name, source, mesh, placements);
    if (dt.globalShape() != p.globalShape)
      fail("rank ", mesh.world()->rank(), ": checkpoint tensor ", p.name, " has shape ",
           torch::IntArrayRef(dt.globalShape()), ", config expects ",
           torch::IntArrayRef(p.globalShape));
    out.insert(p.name, dt.local().to(torch::kFloat).contiguous());
  }
  return out;
}

BatchRows batchRowsOf(const mesh::MeshShape& mesh, int rank, int64_t batchSize) {
  BatchRows r;
  for (const auto& d : mesh.dims()) {
    if (d.name == "tp") continue;
    r.dpRank = r.dpRank * d.size + mesh.coord(rank, d.name);
    r.dpSize *= d.size;
  }
  auto range = ref::chunkRange(batchSize, r.dpSize, r.dpRank);
  r.start = range.start;
  r.length = range.length;
  return r;
}

namespace {

int64_t totalOf(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (auto x : v) s += x;
  return s;
}

}  // namespace

struct DistTrainer::Impl {
  ref::ModelConfig config;
  mesh::DeviceMesh& mesh;
  AppliedPlan plan;
  ref::TrainOptions options;
  DistOptions distOptions;
  std::unique_ptr<ParamStore> store;
  ref::AdamW optimizer;
  int64_t stepCount = 0;
  DispatchStats dispatch;

  // The family's structural traits (reference/model/family.h): the model
  // asks them, never a parameter's name, what the family computes.
  bool qkNorm = true;       // self_attn.{q,k}_norm exist and are applied
  bool fp32Combine = false;  // expert outputs weighted and summed in fp32
  // gpt_oss's layers (ref/model/gpt_oss_model.h): replicated attention and
  // expert parallelism so far; its tensor-parallel styles are not written.
  bool gptOss = false;
  // deepseek_v3 (family.h): latent attention; the bias-corrected router,
  // whose per-layer expert loads this step counted on this rank's tokens
  // (all-reduced over the token-partitioning group before the bias rule).
  bool latentAttention = false;
  bool biasRouter = false;
  std::vector<torch::Tensor> expertLoads;

  std::shared_ptr<comm::Communicator> tp, ep, stats;
  ModelPlan model;                 // what the styles declared (layer_plan.h)
  std::vector<std::string> dpDims;
  bool sp = false;
  int tpSize = 1, epSize = 1;
  // This step's compute tensors by (name, dtype): a store may gather, so
  // each parameter is fetched once per step.
  std::map<std::pair<std::string, int>, torch::Tensor> stepParams;

  // The run's device lane: every tensor of the step lives where the world
  // communicator's collectives take them (CPU, or the rank's GPU).
  torch::Device device;

  Impl(ref::ModelConfig c, mesh::DeviceMesh& m, AppliedPlan p, const ParamMap& hostOrDevice,
       ref::TrainOptions o, DistOptions d)
      : config(std::move(c)), mesh(m), plan(std::move(p)), options(o), distOptions(std::move(d)),
        optimizer(o.adamw), device(m.world()->device()) {
    const auto& family = ref::familyOf(config);
    gptOss = family.gptOssLayers();
    qkNorm = family.qkNorm();
    fp32Combine = family.fp32Combine();
    latentAttention = family.latentAttention();
    biasRouter = family.biasCorrectedRouter();
    // Shards on another device are moved once (a no-op for those already
    // there); the store copies what it keeps.
    ParamMap local;
    for (const auto& kv : hostOrDevice) local.insert(kv.key(), kv.value().to(device));
    tp = mesh.comm("tp");
    ep = mesh.comm("ep");
    tpSize = mesh.size("tp");
    epSize = mesh.size("ep");
    for (const auto& d : mesh.dims())
      if (d.name != "tp") dpDims.push_back(d.name);
    model = readModelPlan(plan, mesh.shape(), config);
    sp = model.sp;
    auto statDims = dpDims;
    if (sp) statDims.push_back("tp");
    stats = mesh.comm(statDims);
    ParamStoreOptions so;
    so.plan = &plan;
    so.mesh = &mesh;
    so.local = &local;
    so.expertSharding = distOptions.expertSharding;
    so.computeDtype = ref::computeDtype(options.precision);
    for (const auto& pp : plan.params) {
      if (!local.contains(pp.name)) fail("rank ", mesh.world()->rank(), ": no local parameter ", pp.name);
      const auto& t = local[pp.name];
      auto want = ref::computeLayout(pp.globalShape, pp.placements, ref::meshSizes(mesh),
                                     mesh.coords()).localShape;
      if (t.sizes().vec() != want)
        fail("rank ", mesh.world()->rank(), ": ", pp.name, " local shape ", t.sizes(),
             " vs expected ", torch::IntArrayRef(want));
      GradReduction red;
      for (int i = 0; i < mesh.ndim(); ++i) {
        const auto& name = mesh.dims()[i].name;
        if (pp.placements[i].isSharded()) continue;
        if (name != "tp") red.dataParallelDims.push_back(name);
        else red.tpPartial = tpPartial(pp.name);
      }
      if (auto f = mutants::points().gradReduction) f(pp, sp, red);
      so.reductions.push_back(red);
    }
    store = makeParamStore(distOptions.wrapper, so);
    // deepseek_v3: a wrapper that cannot hand out the correction biases'
    // masters is refused here, on every rank, before the first step.
    if (biasRouter)
      for (int64_t i = 0; i < config.numHiddenLayers; ++i)
        if (config.isMoeLayer(i)) store->mutableMaster(ref::correctionBiasName(i));
    storeReductions = so.reductions;
  }

  // Checkpoints (issue 19): the store's options for the throwaway stores of
  // restoreState().
  std::vector<GradReduction> storeReductions;

  // Plan-local tensors -> the store's master layout, through a store of the
  // same wrapper built from them.
  std::vector<torch::Tensor> masterLayout(const ParamMap& planLocal) {
    ParamMap local;
    for (const auto& kv : planLocal) local.insert(kv.key(), kv.value().to(device));
    ParamStoreOptions so;
    so.plan = &plan;
    so.mesh = &mesh;
    so.local = &local;
    so.reductions = storeReductions;
    so.expertSharding = distOptions.expertSharding;
    so.computeDtype = ref::computeDtype(options.precision);
    auto tmp = makeParamStore(distOptions.wrapper, so);
    std::vector<torch::Tensor> out;
    for (auto& m : tmp->masters()) out.push_back(m.detach().clone());
    return out;
  }

  // The tp ranks' gradients of this tp-replicated parameter are partial
  // sums (layer_plan.h).
  bool tpPartial(const std::string& name) const { return model.tpPartial(name, tpSize); }

  // The weight to compute with in dtype dt: fetched from the store in fp32
  // once per step, rounded straight-through (partial_sums.h: weight
  // gradients stay fp32 on every rank).
  torch::Tensor w(const std::string& name, torch::ScalarType dt) {
    auto key = std::make_pair(name, static_cast<int>(dt));
    auto it = stepParams.find(key);
    if (it == stepParams.end()) {
      auto fkey = std::make_pair(name, static_cast<int>(torch::kFloat));
      auto f = stepParams.find(fkey);
      if (f == stepParams.end()) f = stepParams.emplace(fkey, store->get(name, torch::kFloat)).first;
      it = dt == torch::kFloat ? f : stepParams.emplace(key, ref::computeWeight(f->second, dt)).first;
    }
    return it->second;
  }

  // The parameters attentionForward reads, as fetched for this step: the
  // q/k norms only for a family that has them (it reads them by the same
  // trait); norm weights stay fp32 (rmsNorm rounds them straight-through).
  ParamMap attentionParams(const std::string& p, torch::ScalarType dt) {
    ParamMap m;
    if (latentAttention) {  // deepseek_v3: the MLA projections; norms fp32
      std::vector<ref::ParamSpec> specs;
      ref::appendLatentAttentionSpecs(config, p, specs);
      for (const auto& s : specs) {
        const bool norm = s.name.size() > 11 && s.name.compare(s.name.size() - 11, 11, "norm.weight") == 0;
        m.insert(s.name, w(s.name, norm ? torch::kFloat : dt));
      }
      return m;
    }
    for (const char* n : {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                          "self_attn.o_proj.weight"})
      m.insert(p + n, w(p + n, dt));
    if (qkNorm)
      for (const char* n : {"self_attn.q_norm.weight", "self_attn.k_norm.weight"})
        m.insert(p + n, w(p + n, torch::kFloat));
    return m;
  }

  // The experts' Partial(sum) outputs summed over tp.
  // partial: [rows, H] -> [rows, H]
  torch::Tensor reducePartialExperts(const torch::Tensor& partial) {
    if (auto f = mutants::points().reduceExpertOutputs) return f(partial, *tp);
    return reduceFromGroup(partial, *tp);
  }

  // Tensor-parallel modules in a compute dtype narrower than fp32 keep their
  // partial sums in fp32 (see reference/model/partial_sums.h).
  static ref::PartialSums tpPartialSums(torch::ScalarType dt) {
    const bool narrow = dt != torch::kFloat && dt != torch::kDouble;
    return {/*wideInput=*/narrow, /*wideOutput=*/narrow, /*computeDtype=*/dt};
  }
  // Entry of a tp module: the replicated (or, under sp, sequence-sharded)
  // input becomes the full input on every tp rank; its gradient is summed
  // (reduce-scattered under sp) over tp, in fp32 when ps.wideInput.
  // sp: x [B, Sl, H] -> [B, S, H]; otherwise any shape, unchanged
  torch::Tensor tpEnter(const torch::Tensor& x, const ref::PartialSums& ps,
                        const std::vector<int64_t>& pieces) {
    auto xi = ps.wideInput ? x.to(torch::kFloat) : x;
    return sp ? gatherAlongDim(xi, *tp, 1, pieces) : copyToGroup(xi, *tp);
  }
  // Exit: the Partial output is summed (reduce-scattered to the sequence
  // shards under sp), then rounded to the compute dtype.
  // y: [B, S, H] -> [B, Sl, H]
  torch::Tensor tpExit(const torch::Tensor& y, const std::vector<int64_t>& pieces, torch::ScalarType dt) {
    return (sp ? reduceScatterAlongDim(y, *tp, 1, pieces) : reduceFromGroup(y, *tp)).to(dt);
  }

  // gpt_oss's attention parameters as fetched for this step (fp32: the
  // model rounds them, as on one device).
  ParamMap gptOssAttentionParams(const std::string& p) {
    ParamMap m;
    for (const char* n : {"sinks", "q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias",
                          "v_proj.weight", "v_proj.bias", "o_proj.weight", "o_proj.bias"}) {
      const std::string name = p + "self_attn." + n;
      m.insert(name, w(name, torch::kFloat));
    }
    return m;
  }

  // gpt_oss's attention, replicated or tensor-parallel by head (styles
  // gpt_oss_attn_colwise / gpt_oss_attn_rowwise / gpt_oss_sinks_by_head):
  // under tp each rank runs its heads (q/k/v rows and biases, sinks) from
  // the full input (fp32 under a narrow dtype), its o_proj output is a
  // Partial sum kept in fp32, all-reduced over tp; the whole o_proj.bias is
  // added ONCE to the sum, which is then rounded once, as one device adds it
  // to its fp32 accumulator.
  // x: [B, S, H] -> [B, S, H] in dt
  torch::Tensor gptOssAttentionLayer(const torch::Tensor& x, const std::string& p, int64_t layer,
                                     torch::ScalarType dt, bool tensorParallel) {
    if (!tensorParallel) return ref::gptOssAttention(x, gptOssAttentionParams(p), layer, config, dt);
    const ref::PartialSums ps = tpPartialSums(dt);
    ref::GptOssAttentionOptions ao;
    ao.partialSums = {ps.wideInput, /*wideOutput=*/true, dt};
    const bool biasPerRank = mutants::points().rowParallelBiasPerRank && mutants::points().rowParallelBiasPerRank();
    ao.addOutputBias = biasPerRank;  // the mutant: every tp rank adds it
    auto a = ref::gptOssAttention(tpEnter(x, ps, {}), gptOssAttentionParams(p), layer, config, dt, ao);
    a = reduceFromGroup(a, *tp);
    if (!biasPerRank) a = a + ref::computeWeight(w(p + "self_attn.o_proj.bias", torch::kFloat), dt).to(a.scalar_type());
    return a.to(dt);
  }

  // gpt_oss's experts under ep x tp: each ep rank holds L = E / ep experts
  // (Shard(0)), each tp rank of those whole (gate, up) pairs (Shard(-1) of the
  // interleaved gate_up_proj and its bias) and the matching down_proj rows.
  // The tokens' rows are dispatched over ep (fp32 under a narrow dtype, as
  // tpEnter hands them); the local experts' Partial(sum) outputs are reduced
  // over tp in fp32, the row-parallel down_proj_bias (whole over tp, its ep
  // shard [L, H]) is added ONCE to the reduced rows, then they are rounded
  // once and returned for the combine on the token's rank.
  // xt: [T, H] in dt, idx/wts: [T, k] -> [T, H] in dt
  torch::Tensor gptOssEpTpExperts(const torch::Tensor& xt, const torch::Tensor& idx, const torch::Tensor& wts,
                                  ref::GptOssExperts ex, torch::ScalarType dt) {
    const ref::PartialSums ps = tpPartialSums(dt);
    auto xe = tpEnter(xt, ps, chunkSizes(options.seqLen, tpSize));
    const int64_t numLocal = ex.gateUp.size(0);
    ex.firstExpert = mesh.coord("ep") * numLocal;
    auto downBias = ex.downBias;  // [L, H]
    ex.downBias = torch::Tensor();
    const bool biasPerRank = mutants::points().rowParallelBiasPerRank && mutants::points().rowParallelBiasPerRank();
    if (biasPerRank) ex.downBias = downBias;  // the mutant: every tp rank adds it
    EpDispatchOptions eo{/*numExperts=*/config.numExperts, config.expertsImplementation};
    eo.localExperts = [&](const torch::Tensor& xLocal, const std::vector<int64_t>& rows) {
      auto y = reducePartialExperts(
          ref::gptOssGroupedExperts(xLocal, rows, ex, config, {ps.wideInput, /*wideOutput=*/true, dt}));
      if (!biasPerRank) {
        auto counts = torch::tensor(rows, torch::TensorOptions().dtype(torch::kLong)).to(y.device());
        y = y + downBias.index_select(0, torch::repeat_interleave(counts)).to(y.scalar_type());
      }
      return y.to(dt);
    };
    const ref::LocalExperts block{ex.gateUp, ex.down, ex.firstExpert};
    auto r = epExpertsForward(xe, idx, wts, block, *ep, eo);
    dispatch.tokensSent += totalOf(r.numTokensPerRank);
    dispatch.rowsReceivedPerLayer.push_back(totalOf(r.numTokensReceivedPerLocalExpert));
    return r.out;
  }

  // The gpt_oss MoE layer: replicated or expert-parallel (ref::gptOss*).
  // x: [B, Sl, H] -> [B, Sl, H]
  torch::Tensor gptOssMoeLayer(const torch::Tensor& x, int64_t layer, torch::ScalarType dt,
                               std::vector<torch::Tensor>& routerLogits) {
    const auto p = ref::layerPrefix(layer);
    const auto& lp = model.layers[static_cast<size_t>(layer)];
    const bool loop = config.expertsImplementation == "loop";
    if (sp || (lp.moeTp && loop))
      fail("plan: ", p, "mlp.experts: gpt_oss under sequence parallelism, or loop experts under MoE "
           "tensor parallelism, is not implemented yet (docs/families.md)");
    const int64_t b = x.size(0), sl = x.size(1), h = x.size(2);
    auto xt = x.reshape({b * sl, h});
    auto router = ref::gptOssRoute(xt, w(p + "mlp.router.weight", dt), w(p + "mlp.router.bias", dt), config);
    routerLogits.push_back(router.logits);
    const auto& idx = router.routing.topkIdx;
    const auto& wts = router.routing.topkWeights;
    ref::GptOssExperts ex{w(p + "mlp.experts.gate_up_proj", dt), w(p + "mlp.experts.gate_up_proj_bias", dt),
                          w(p + "mlp.experts.down_proj", dt), w(p + "mlp.experts.down_proj_bias", dt),
                          /*firstExpert=*/0};
    torch::Tensor out;
    if (lp.moeTp && lp.epOn) {
      out = gptOssEpTpExperts(xt, idx, wts, ex, dt);
    } else if (lp.moeTp) {
      // Each tp rank holds whole (gate, up) pairs of every expert and the
      // matching rows of down_proj: its output is a Partial(sum), kept in
      // fp32 under a narrow dtype, summed over tp per row; the row-parallel
      // down_proj_bias is added once, to the sum, then rounded once (as the
      // single device adds it to its fp32 accumulator).
      const ref::PartialSums ps = tpPartialSums(dt);
      auto xe = tpEnter(xt, ps, chunkSizes(options.seqLen, tpSize));
      auto pl = kernels::makePermutePlan(idx, config.numExperts);
      const auto& rows = pl.numTokensPerExpertHost;
      auto downBias = ex.downBias;
      ex.downBias = torch::Tensor();
      const bool biasPerRank = mutants::points().rowParallelBiasPerRank && mutants::points().rowParallelBiasPerRank();
      if (biasPerRank) ex.downBias = downBias;  // the mutant: every tp rank adds it
      auto y = reducePartialExperts(ref::gptOssGroupedExperts(kernels::permuteTokens(xe, pl), rows, ex, config,
                                                              {ps.wideInput, /*wideOutput=*/true, dt}));
      if (!biasPerRank) {
        auto counts = torch::tensor(rows, torch::TensorOptions().dtype(torch::kLong)).to(y.device());
        y = y + downBias.index_select(0, torch::repeat_interleave(counts)).to(y.scalar_type());
      }
      out = ref::combineExpertOutputs(y.to(dt), pl, wts, /*fp32Combine=*/false);
    } else if (lp.epOn) {
      const int64_t numLocal = ex.gateUp.size(0);
      ex.firstExpert = mesh.coord("ep") * numLocal;
      EpDispatchOptions eo{/*numExperts=*/config.numExperts, config.expertsImplementation};
      eo.localExperts = [&](const torch::Tensor& xLocal, const std::vector<int64_t>& rows) {
        if (!loop) return ref::gptOssGroupedExperts(xLocal, rows, ex, config);
        auto longOpts = torch::TensorOptions().dtype(torch::kLong).device(xLocal.device());
        auto counts = torch::tensor(rows, longOpts);
        auto expertOfRow = (torch::repeat_interleave(counts) + ex.firstExpert).view({-1, 1});
        auto ones = torch::ones({xLocal.size(0), 1}, xLocal.options());
        return ref::gptOssLoopExperts(xLocal, expertOfRow, ones, ex, config);
      };
      // The dispatch reads the local expert count and first index from here.
      const ref::LocalExperts block{ex.gateUp, ex.down, ex.firstExpert};
      auto r = epExpertsForward(xt, idx, wts, block, *ep, eo);
      dispatch.tokensSent += totalOf(r.numTokensPerRank);
      dispatch.rowsReceivedPerLayer.push_back(totalOf(r.numTokensReceivedPerLocalExpert));
      out = r.out;
    } else if (loop) {
      out = ref::gptOssLoopExperts(xt, idx, wts, ex, config);
    } else {
      auto pl = kernels::makePermutePlan(idx, config.numExperts);
      auto y = ref::gptOssGroupedExperts(kernels::permuteTokens(xt, pl), pl.numTokensPerExpertHost, ex, config);
      out = ref::combineExpertOutputs(y, pl, wts, /*fp32Combine=*/false);
    }
    return out.view({b, sl, h}).to(dt);
  }

  // x: [B, Sl, H] (sequence shard under sp) -> [B, Sl, H]
  torch::Tensor moeLayer(const torch::Tensor& x, int64_t layer, torch::ScalarType dt,
                         std::vector<torch::Tensor>& routerLogits) {
    if (gptOss) return gptOssMoeLayer(x, layer, dt, routerLogits);
    const auto p = ref::layerPrefix(layer);
    const int64_t b = x.size(0), sl = x.size(1), h = x.size(2), k = config.numExpertsPerTok;
    auto xt = x.reshape({b * sl, h});
    const bool moeTp = model.layers[static_cast<size_t>(layer)].moeTp;
    const bool epOn = model.layers[static_cast<size_t>(layer)].epOn;
    torch::Tensor groupExperts;  // undefined: the group scores see every expert
    if (auto f = mutants::points().groupScoresLocalExperts; f && f() && epOn) {
      const int64_t local = config.numExperts / epSize;
      groupExperts = torch::zeros({config.numExperts}, torch::TensorOptions(torch::kBool).device(device));
      groupExperts.narrow(0, mesh.coord("ep") * local, local).fill_(true);
    }
    auto router = biasRouter  // deepseek_v3: the fp32 master router and its bias
                      ? ref::biasCorrectedRoute(xt, w(p + "mlp.gate.weight", torch::kFloat),
                                                w(ref::correctionBiasName(layer), torch::kFloat).detach(),
                                                config, groupExperts)
                      : ref::routeTokens(xt, w(p + "mlp.gate.weight", dt), config);
    routerLogits.push_back(router.logits);
    if (biasRouter) expertLoads.push_back(ref::expertLoads(router.routing.topkIdx, config.numExperts));
    auto idx = router.routing.topkIdx, wts = router.routing.topkWeights, xe = xt;
    const auto pieces = chunkSizes(options.seqLen, tpSize);
    // Grouped experts keep their tp partial sums in fp32 (partial_sums.h).
    const bool loop = config.expertsImplementation == "loop";
    const ref::PartialSums ps = moeTp && !loop ? tpPartialSums(dt) : ref::PartialSums{};
    if (moeTp && sp) {
      xe = tpEnter(x, ps, pieces).reshape({-1, h});
      idx = gatherAlongDimNoGrad(idx.view({b, sl, k}), *tp, 1, pieces).reshape({-1, k});
      wts = gatherAlongDim(wts.view({b, sl, k}), *tp, 1, pieces).reshape({-1, k});
    } else if (moeTp) {
      // The experts' outputs are all-reduced per row before the combine (see
      // below), so the combine and the routing-weight gradient are computed
      // from full expert outputs, as on one device; only the expert input's
      // gradient is partial.
      xe = tpEnter(xt, ps, pieces);
    }
    // Where the experts' Partial outputs are reduced: per expert row (before
    // the combine) unless sequence parallel, where the combined output is
    // reduce-scattered to the sequence shards instead.
    const bool reduceRows = moeTp && !sp && config.expertsImplementation != "loop";
    if (moeTp && !sp && !reduceRows) wts = copyToGroup(wts, *tp);
    ref::LocalExperts ex{w(p + "mlp.experts.gate_up_proj", dt), w(p + "mlp.experts.down_proj", dt),
                         /*firstExpert=*/0};
    torch::Tensor out;
    if (epOn) {
      ex.firstExpert = mesh.coord("ep") * ex.gateUp.size(0);
      EpDispatchOptions eo{/*numExperts=*/config.numExperts, config.expertsImplementation};
      if (reduceRows) eo.reduceExpertOutputs = tp.get();
      eo.partialSums = ps;
      eo.fp32Combine = fp32Combine;
      auto r = epExpertsForward(xe, idx, wts, ex, *ep, eo);
      dispatch.tokensSent += totalOf(r.numTokensPerRank);
      dispatch.rowsReceivedPerLayer.push_back(totalOf(r.numTokensReceivedPerLocalExpert));
      out = r.out;
    } else if (config.expertsImplementation == "loop") {
      // Under fp32Combine the (partial) sum stays fp32 until rounded below,
      // after the tp reduction when there is one.
      out = ref::loopExpertsForward(xe, idx, wts, ex, fp32Combine);
    } else {
      auto pl = kernels::makePermutePlan(idx, config.numExperts);
      auto y = ref::groupedExpertsForward(kernels::permuteTokens(xe, pl), pl.numTokensPerExpertHost, ex, ps);
      if (reduceRows) y = reducePartialExperts(y).to(dt);
      out = ref::combineExpertOutputs(y, pl, wts, fp32Combine);
    }
    if (moeTp && sp) {
      out = reduceScatterAlongDim(out.view({b, -1, h}), *tp, 1, pieces).to(dt);
    } else if (moeTp && !reduceRows) {
      out = reducePartialExperts(out).view({b, sl, h}).to(dt);
    } else {
      out = out.view({b, sl, h}).to(dt);
    }
    if (config.sharedExpertIntermediateSize > 0) {
      auto shared = ref::swiglu(xt, w(p + "mlp.shared_expert.gate_proj.weight", dt),
                                w(p + "mlp.shared_expert.up_proj.weight", dt),
                                w(p + "mlp.shared_expert.down_proj.weight", dt));
      auto gate = torch::sigmoid(ref::project(xt, w(p + "mlp.shared_expert_gate.weight", dt)));
      out = out + (gate * shared).view({b, sl, h});
    }
    if (config.nSharedExperts > 0) {  // deepseek_v3: ungated, a dense MLP region
      const auto& lp = model.layers[static_cast<size_t>(layer)];
      const auto sPs = lp.sharedTp ? tpPartialSums(dt) : ref::PartialSums{};
      const std::string s = p + "mlp.shared_experts.";
      // On xt, the tensor the router and experts read, as one device does:
      // the gradients reaching x are then summed in the same order (bf16).
      // Sequence parallelism gathers along the sequence: the [B, Sl, H] view.
      auto in = lp.sharedTp ? (sp ? tpEnter(x, sPs, pieces) : tpEnter(xt, sPs, pieces)) : xt;
      auto shared = ref::swiglu(in, w(s + "gate_proj.weight", dt), w(s + "up_proj.weight", dt),
                                w(s + "down_proj.weight", dt), sPs);
      if (lp.sharedTp) shared = tpExit(shared, pieces, dt);
      out = out + shared.view({b, sl, h});
    }
    return out;
  }

  // The family's RMSNorm. x: [..., H], weight: [H] fp32
  torch::Tensor norm(const torch::Tensor& x, const torch::Tensor& weight) const {
    return gptOss ? ref::gptOssRmsNorm(x, weight, config.rmsNormEps) : ref::rmsNorm(x, weight, config.rmsNormEps);
  }

  struct Loss {
    torch::Tensor objective;
    double loss = 0, ce = 0, aux = 0;
  };

  // ids: [Bl, S] this rank's rows of the global batch.
  Loss forwardLoss(const torch::Tensor& ids) {
    const auto dt = ref::computeDtype(options.precision);
    const int64_t b = ids.size(0), s = ids.size(1), hidden = config.hiddenSize;
    const auto pieces = chunkSizes(s, tpSize);
    int64_t s0 = 0, sl = s;
    if (sp) {
      auto r = ref::chunkRange(s, tpSize, mesh.coord("tp"));
      s0 = r.start;
      sl = r.length;
      if (s % tpSize != 0)
        fail("sequence parallelism: seq len ", s, " is not divisible by tp = ", tpSize);
    }
    auto embed = w("model.embed_tokens.weight", dt);
    auto h = embed.index_select(0, ids.narrow(1, s0, sl).reshape({-1})).view({b, sl, hidden}).to(dt);
    std::vector<torch::Tensor> routerLogits;
    for (int64_t i = 0; i < config.numHiddenLayers; ++i) {
      const auto p = ref::layerPrefix(i);
      auto x = norm(h, w(p + "input_layernorm.weight", torch::kFloat));
      const bool aTp = model.layers[static_cast<size_t>(i)].attnTp;
      const auto aPs = aTp ? tpPartialSums(dt) : ref::PartialSums{};
      torch::Tensor a;
      if (gptOss) {
        if (sp)
          fail("plan: ", p, "self_attn: gpt_oss under sequence parallelism is not implemented yet "
               "(docs/families.md)");
        a = gptOssAttentionLayer(x, p, i, dt, aTp);
      } else {
        auto aIn = aTp ? tpEnter(x, aPs, pieces) : x;
        a = latentAttention ? ref::latentAttentionForward(aIn, attentionParams(p, dt), p, config, dt, aPs)
                            : ref::attentionForward(aIn, attentionParams(p, dt), p, config, dt, aPs);
      }
      if (aTp && !gptOss) a = tpExit(a, pieces, dt);
      h = h + a;
      x = norm(h, w(p + "post_attention_layernorm.weight", torch::kFloat));
      torch::Tensor m;
      if (config.isMoeLayer(i)) {
        m = moeLayer(x, i, dt, routerLogits);
      } else {
        const bool mTp = model.layers[static_cast<size_t>(i)].mlpTp;
        const auto mPs = mTp ? tpPartialSums(dt) : ref::PartialSums{};
        m = ref::swiglu(mTp ? tpEnter(x, mPs, pieces) : x, w(p + "mlp.gate_proj.weight", dt),
                        w(p + "mlp.up_proj.weight", dt), w(p + "mlp.down_proj.weight", dt), mPs);
        if (mTp) m = tpExit(m, pieces, dt);
      }
      h = h + m;
    }
    h = norm(h, w("model.norm.weight", torch::kFloat));
    auto head = config.tieWordEmbeddings ? embed : w("lm_head.weight", dt);
    auto logits = ref::project(h, head);  // [Bl, Sl, V]

    // CE over local positions t in [s0, s0 + sl) that have a next token.
    const int64_t valid = std::max<int64_t>(0, std::min(sl, s - 1 - s0));
    const auto statDt = kernels::routingDtype(logits.scalar_type());
    torch::Tensor ceSum;
    if (valid > 0 && b > 0) {
      auto pred = logits.narrow(1, 0, valid).reshape({b * valid, -1}).to(statDt);
      auto target = ids.narrow(1, s0 + 1, valid).reshape({-1});
      ceSum = torch::nll_loss(torch::log_softmax(pred, -1), target, {}, at::Reduction::Sum);
    } else {
      ceSum = logits.sum().to(statDt) * 0.0;
    }
    const double numPositions =
        static_cast<double>(options.batchSize) * static_cast<double>(s - 1);
    Loss out;
    auto ceGlobal = ceSum.detach().clone().view({1});
    stats->allReduce(ceGlobal, comm::ReduceOp::kSum);
    out.ce = ceGlobal.item<double>() / numPositions;
    torch::Tensor objective = ceSum / numPositions;
    if (!routerLogits.empty() && ref::familyOf(config).routerAuxLoss()) {
      auto st = ref::routerAuxStats(routerLogits, config.numExpertsPerTok);
      auto counts = st.selectionCounts.detach().clone().contiguous();
      auto probs = st.probSums.detach().clone().contiguous();
      auto n = torch::tensor({static_cast<double>(st.numTokens)}, torch::TensorOptions(torch::kDouble).device(device));
      const auto auxLocal = mutants::points().auxStatsLocal;
      if (!auxLocal || !auxLocal()) {
        stats->allReduce(counts, comm::ReduceOp::kSum);
        stats->allReduce(probs, comm::ReduceOp::kSum);
        stats->allReduce(n, comm::ReduceOp::kSum);
      }
      const double numTokens = n.item<double>();
      const double numExperts = static_cast<double>(st.probSums.size(0));
      auto f = counts / numTokens;  // [k, E]
      out.aux = ((f * (probs / numTokens).unsqueeze(0)).sum() * numExperts).item<double>();
      auto surrogate = (f * (st.probSums / numTokens).unsqueeze(0)).sum() * numExperts;
      objective = objective + config.routerAuxLossCoef * surrogate.to(objective.scalar_type());
    }
    // The single-device loss in fp32: ce + coef * aux.
    out.loss = static_cast<double>(
        static_cast<float>(out.ce) + static_cast<float>(config.routerAuxLossCoef) * static_cast<float>(out.aux));
    out.objective = objective;
    return out;
  }

  ref::StepRecord step() {
    ++stepCount;
    ref::StepRecord rec;
    rec.step = stepCount;
    dispatch = {};
    auto global = ref::trainBatch(config, options, stepCount);
    auto rows = batchRowsOf(mesh.shape(), mesh.world()->rank(), options.batchSize);
    // The deterministic batch is made on the host and moved once.
    auto ids = global.narrow(0, rows.start, rows.length).contiguous().to(device);
    store->beginStep();
    stepParams.clear();
    expertLoads.clear();
    auto loss = forwardLoss(ids);
    loss.objective.backward();
    stepParams.clear();
    rec.loss = loss.loss;
    rec.ce = loss.ce;
    rec.aux = loss.aux;

    const double sumSq = store->reduceGradients();
    auto ps = store->masters();
    // Clipping scales copies: the store's reduced gradients stay as reduced,
    // so gradShards() can read them after the step (lazily: zero3 gathers).
    auto gs = store->grads();
    auto total = torch::tensor({sumSq}, torch::TensorOptions(torch::kDouble).device(device));
    mesh.world()->allReduce(total, comm::ReduceOp::kSum);
    auto norm = torch::sqrt(total.to(torch::kFloat)).squeeze();
    rec.gradNorm = norm.item<double>();
    if (options.maxGradNorm > 0) {
      torch::NoGradGuard ng;
      auto coef = torch::clamp(options.maxGradNorm / (norm + 1e-6), std::nullopt, 1.0);
      for (auto& g : gs) g = g * coef;
    }
    if (!biasRouter) {
      optimizer.step(ps, gs);
      return rec;
    }
    // deepseek_v3: the correction biases are not trained (AdamW would still
    // decay them): kept through the optimizer step, then moved by the
    // balancing rule with the loads of the GLOBAL batch, all-reduced over
    // the ranks that partition the tokens, so every rank holds the same bias.
    std::vector<torch::Tensor> biases, kept;
    for (int64_t i = 0; i < config.numHiddenLayers; ++i) {
      if (!config.isMoeLayer(i)) continue;
      biases.push_back(store->mutableMaster(ref::correctionBiasName(i)));
      kept.push_back(biases.back().detach().clone());
    }
    optimizer.step(ps, gs);
    auto loads = torch::cat(expertLoads).contiguous();  // [MoE layers * E] fp32
    if (auto f = mutants::points().biasLoadsLocal; !(f && f())) {
      stats->allReduce(loads, comm::ReduceOp::kSum);
    } else {  // the mutant: the same traffic, but the local loads are used
      auto copy = loads.clone();
      stats->allReduce(copy, comm::ReduceOp::kSum);
    }
    torch::NoGradGuard ng;
    for (size_t j = 0; j < biases.size(); ++j) {
      auto b = kept[j];
      ref::applyBiasUpdate(b, loads.narrow(0, static_cast<int64_t>(j) * config.numExperts, config.numExperts),
                           config.biasUpdateSpeed);
      biases[j].copy_(b);
    }
    expertLoads.clear();  // nothing of the step is kept (the memory check counts it)
    return rec;
  }

  std::vector<CommExpectation> expectedStepComm() const {
    StepCommInputs in{config, options, mesh, model.layers, sp, *tp, *ep, *stats, *store, dispatch};
    return parallel::expectedStepComm(in);
  }
};

DistTrainer::DistTrainer(ref::ModelConfig config, mesh::DeviceMesh& mesh, AppliedPlan plan,
                         const ParamMap& localParams, ref::TrainOptions options, DistOptions distOptions)
    : impl_(std::make_unique<Impl>(std::move(config), mesh, std::move(plan), localParams, options,
                                   std::move(distOptions))) {}
DistTrainer::~DistTrainer() = default;
ref::StepRecord DistTrainer::step() { return impl_->step(); }
const AppliedPlan& DistTrainer::plan() const { return impl_->plan; }
const DispatchStats& DistTrainer::lastDispatch() const { return impl_->dispatch; }
const ParamStore& DistTrainer::store() const { return *impl_->store; }
int64_t DistTrainer::optimizerStateBytes() const {
  int64_t n = 0;
  for (const auto* v : {&impl_->optimizer.expAvg(), &impl_->optimizer.expAvgSq()})
    for (const auto& t : *v) n += t.numel() * static_cast<int64_t>(t.element_size());
  return n;
}
std::vector<CommExpectation> DistTrainer::expectedStepComm() const {
  return impl_->expectedStepComm();
}
std::vector<ParamShard> DistTrainer::paramShards() const { return impl_->store->paramShards(); }
std::vector<ParamShard> DistTrainer::gradShards() const { return impl_->store->gradShards(); }

int64_t DistTrainer::stepsTaken() const { return impl_->stepCount; }

std::vector<ParamShard> DistTrainer::optimizerShards(bool secondMoment) const {
  const auto& m = secondMoment ? impl_->optimizer.expAvgSq() : impl_->optimizer.expAvg();
  if (!m.empty()) return impl_->store->shardsOf(m);
  std::vector<torch::Tensor> zeros;
  for (const auto& t : impl_->store->masters()) zeros.push_back(torch::zeros_like(t).detach());
  return impl_->store->shardsOf(zeros);
}

void DistTrainer::restoreState(int64_t step, const ParamMap& expAvgLocal, const ParamMap& expAvgSqLocal) {
  auto m = impl_->masterLayout(expAvgLocal);
  auto v = impl_->masterLayout(expAvgSqLocal);
  impl_->optimizer.setState(step, step > 0 ? std::move(m) : std::vector<torch::Tensor>{},
                            step > 0 ? std::move(v) : std::vector<torch::Tensor>{});
  impl_->stepCount = step;
}

}  // namespace moe::parallel
