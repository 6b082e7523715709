#include "reference/parallel/dist_model.h"

#include <cmath>

#include "harness/comm/flight_recorder.h"
#include "common/error.h"
#include "kernels/permute.h"
#include "reference/model/moe_block.h"
#include "reference/model/qwen3_moe.h"
#include "reference/mutants/mutation_points.h"
#include "reference/parallel/comm_ops.h"
#include "reference/parallel/ep_dispatch.h"
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

bool endsWith(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

int64_t sum(const std::vector<int64_t>& v) {
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

  std::shared_ptr<comm::Communicator> tp, ep, stats;
  std::vector<std::string> dpDims;
  bool sp = false;
  int tpSize = 1, epSize = 1;
  // This step's compute tensors by (name, dtype): a store may gather, so
  // each parameter is fetched once per step.
  std::map<std::pair<std::string, int>, torch::Tensor> stepParams;

  Impl(ref::ModelConfig c, mesh::DeviceMesh& m, AppliedPlan p, const ParamMap& local,
       ref::TrainOptions o, DistOptions d)
      : config(std::move(c)), mesh(m), plan(std::move(p)), options(o), distOptions(std::move(d)),
        optimizer(o.adamw) {
    tp = mesh.comm("tp");
    ep = mesh.comm("ep");
    tpSize = mesh.size("tp");
    epSize = mesh.size("ep");
    for (const auto& d : mesh.dims())
      if (d.name != "tp") dpDims.push_back(d.name);
    sp = tpSize > 1 && plan.any(::moe::plan::kSequenceParallel);
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
    validatePlan();
    store = makeParamStore(distOptions.wrapper, so);
  }

  int64_t layerOf(const std::string& name) const {
    const std::string pre = "model.layers.";
    if (name.rfind(pre, 0) != 0) return -1;
    return std::stoll(name.substr(pre.size()));
  }

  bool attnTp(int64_t layer) const {
    return tpSize > 1 && plan.has(ref::layerPrefix(layer) + "self_attn.q_proj", ::moe::plan::kCopyInputTp);
  }

  // The tp ranks' gradients of this tp-replicated parameter are partial sums.
  bool tpPartial(const std::string& name) const {
    if (tpSize <= 1) return false;
    if (sp) return true;
    const int64_t layer = layerOf(name);
    return layer >= 0 && attnTp(layer) &&
           (endsWith(name, "q_norm.weight") || endsWith(name, "k_norm.weight"));
  }

  bool shardedOn(const std::string& name, const std::string& dim) const {
    const int i = mesh.shape().index(dim);
    return i >= 0 && mesh.dims()[i].size > 1 && plan.param(name).placements[i].isSharded();
  }

  void validatePlan() const {
    auto need = [&](bool cond, const std::string& what) {
      if (!cond) fail("plan: ", what);
    };
    for (int64_t i = 0; i < config.numHiddenLayers; ++i) {
      const auto p = ref::layerPrefix(i);
      const bool qTp = shardedOn(p + "self_attn.q_proj.weight", "tp");
      need(qTp == shardedOn(p + "self_attn.k_proj.weight", "tp") &&
               qTp == shardedOn(p + "self_attn.v_proj.weight", "tp") &&
               qTp == shardedOn(p + "self_attn.o_proj.weight", "tp"),
           p + "self_attn: q/k/v_proj and o_proj must be sharded over tp together");
      need(!qTp || (attnTp(i) && plan.has(p + "self_attn.o_proj", ::moe::plan::kAllReduceOutputTp)),
           p + "self_attn: tp-sharded attention needs colwise q/k/v and rowwise o_proj");
      if (sp) need(qTp, p + "self_attn: sequence_parallel needs tensor-parallel attention");
      if (config.isMoeLayer(i)) {
        const bool moeTp = shardedOn(p + "mlp.experts.gate_up_proj", "tp");
        need(moeTp == shardedOn(p + "mlp.experts.down_proj", "tp"),
             p + "mlp.experts: gate_up_proj and down_proj must be sharded over tp together");
        need(!moeTp || plan.has(p + "mlp.experts", ::moe::plan::kExpertsAllReduceTp),
             p + "mlp.experts: tp-sharded experts need moe_experts_allreduce");
        const bool epSharded = shardedOn(p + "mlp.experts.gate_up_proj", "ep");
        need(epSharded == shardedOn(p + "mlp.experts.down_proj", "ep"),
             p + "mlp.experts: gate_up_proj and down_proj must be sharded over ep together");
        need(!epSharded || plan.has(p + "mlp.gate", ::moe::plan::kEpDispatch),
             p + "mlp: ep-sharded experts need ep_router on mlp.gate");
        need(epSharded || !plan.has(p + "mlp.gate", ::moe::plan::kEpDispatch) || epSize == 1,
             p + "mlp.gate: ep_router needs grouped_gemm experts");
        need(!shardedOn(p + "mlp.gate.weight", "tp"), p + "mlp.gate: the router must stay replicated");
      } else {
        const bool mTp = shardedOn(p + "mlp.gate_proj.weight", "tp");
        need(mTp == shardedOn(p + "mlp.up_proj.weight", "tp") &&
                 mTp == shardedOn(p + "mlp.down_proj.weight", "tp"),
             p + "mlp: gate/up/down_proj must be sharded over tp together");
        need(!mTp || (plan.has(p + "mlp.gate_proj", ::moe::plan::kCopyInputTp) &&
                      plan.has(p + "mlp.down_proj", ::moe::plan::kAllReduceOutputTp)),
             p + "mlp: tp needs colwise gate/up_proj and rowwise down_proj");
        if (sp) need(mTp, p + "mlp: sequence_parallel needs tensor-parallel dense MLPs");
      }
    }
    for (const auto& n : {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"})
      for (const auto& pp : plan.params)
        if (pp.name == n)
          for (const auto& pl : pp.placements)
            need(!pl.isSharded(), std::string(n) + ": the distributed model keeps it replicated");
  }

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

  // The parameters attentionForward reads, as fetched for this step; norm
  // weights stay fp32 (rmsNorm rounds them straight-through, see there).
  ParamMap attentionParams(const std::string& p, torch::ScalarType dt) {
    ParamMap m;
    for (const char* n : {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                          "self_attn.o_proj.weight"})
      m.insert(p + n, w(p + n, dt));
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

  // x: [B, Sl, H] (sequence shard under sp) -> [B, Sl, H]
  torch::Tensor moeLayer(const torch::Tensor& x, int64_t layer, torch::ScalarType dt,
                         std::vector<torch::Tensor>& routerLogits) {
    const auto p = ref::layerPrefix(layer);
    const int64_t b = x.size(0), sl = x.size(1), h = x.size(2), k = config.numExpertsPerTok;
    auto xt = x.reshape({b * sl, h});
    auto router = ref::routeTokens(xt, w(p + "mlp.gate.weight", dt), config);
    routerLogits.push_back(router.logits);
    const bool moeTp = shardedOn(p + "mlp.experts.gate_up_proj", "tp");
    const bool epOn = shardedOn(p + "mlp.experts.gate_up_proj", "ep");
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
      auto r = epExpertsForward(xe, idx, wts, ex, *ep, eo);
      dispatch.tokensSent += sum(r.numTokensPerRank);
      dispatch.rowsReceivedPerLayer.push_back(sum(r.numTokensReceivedPerLocalExpert));
      out = r.out;
    } else if (config.expertsImplementation == "loop") {
      out = ref::loopExpertsForward(xe, idx, wts, ex);
    } else {
      auto pl = kernels::makePermutePlan(idx, config.numExperts);
      auto y = ref::groupedExpertsForward(kernels::permuteTokens(xe, pl), pl.numTokensPerExpertHost, ex, ps);
      if (reduceRows) y = reducePartialExperts(y).to(dt);
      out = kernels::unpermuteCombine(y, pl, wts);
    }
    if (moeTp && sp) {
      out = reduceScatterAlongDim(out.view({b, -1, h}), *tp, 1, pieces).to(dt);
    } else if (moeTp && !reduceRows) {
      out = reducePartialExperts(out).view({b, sl, h}).to(dt);
    } else {
      out = out.view({b, sl, h});
    }
    if (config.sharedExpertIntermediateSize > 0) {
      auto shared = ref::swiglu(xt, w(p + "mlp.shared_expert.gate_proj.weight", dt),
                                w(p + "mlp.shared_expert.up_proj.weight", dt),
                                w(p + "mlp.shared_expert.down_proj.weight", dt));
      auto gate = torch::sigmoid(ref::project(xt, w(p + "mlp.shared_expert_gate.weight", dt)));
      out = out + (gate * shared).view({b, sl, h});
    }
    return out;
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
      auto x = ref::rmsNorm(h, w(p + "input_layernorm.weight", torch::kFloat), config.rmsNormEps);
      const bool aTp = shardedOn(p + "self_attn.q_proj.weight", "tp");
      const auto aPs = aTp ? tpPartialSums(dt) : ref::PartialSums{};
      auto a = ref::attentionForward(aTp ? tpEnter(x, aPs, pieces) : x, attentionParams(p, dt), p, config, dt, aPs);
      if (aTp) a = tpExit(a, pieces, dt);
      h = h + a;
      x = ref::rmsNorm(h, w(p + "post_attention_layernorm.weight", torch::kFloat), config.rmsNormEps);
      torch::Tensor m;
      if (config.isMoeLayer(i)) {
        m = moeLayer(x, i, dt, routerLogits);
      } else {
        const bool mTp = shardedOn(p + "mlp.gate_proj.weight", "tp");
        const auto mPs = mTp ? tpPartialSums(dt) : ref::PartialSums{};
        m = ref::swiglu(mTp ? tpEnter(x, mPs, pieces) : x, w(p + "mlp.gate_proj.weight", dt),
                        w(p + "mlp.up_proj.weight", dt), w(p + "mlp.down_proj.weight", dt), mPs);
        if (mTp) m = tpExit(m, pieces, dt);
      }
      h = h + m;
    }
    h = ref::rmsNorm(h, w("model.norm.weight", torch::kFloat), config.rmsNormEps);
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
    if (!routerLogits.empty()) {
      auto st = ref::routerAuxStats(routerLogits, config.numExpertsPerTok);
      auto counts = st.selectionCounts.detach().clone().contiguous();
      auto probs = st.probSums.detach().clone().contiguous();
      auto n = torch::tensor({static_cast<double>(st.numTokens)}, torch::kDouble);
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
    auto ids = global.narrow(0, rows.start, rows.length).contiguous();
    store->beginStep();
    stepParams.clear();
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
    auto total = torch::tensor({sumSq}, torch::kDouble);
    mesh.world()->allReduce(total, comm::ReduceOp::kSum);
    auto norm = torch::sqrt(total.to(torch::kFloat)).squeeze();
    rec.gradNorm = norm.item<double>();
    if (options.maxGradNorm > 0) {
      torch::NoGradGuard ng;
      auto coef = torch::clamp(options.maxGradNorm / (norm + 1e-6), std::nullopt, 1.0);
      for (auto& g : gs) g = g * coef;
    }
    optimizer.step(ps, gs);
    return rec;
  }


  std::vector<CommExpectation> expectedStepComm() const {
    std::map<std::pair<std::string, comm::OpType>, CommExpectation> acc;
    // bytes < 0: depends on the routing, only the call is counted.
    auto add = [&](const comm::Communicator& g, comm::OpType op, int64_t payloadBytes) {
      auto& e = acc[{g.name(), op}];
      if (e.calls == 0) {
        e.group = g.name();
        e.op = op;
        e.bytesSent = 0;
      }
      ++e.calls;
      if (payloadBytes < 0 || !e.bytesSent) e.bytesSent.reset();
      else *e.bytesSent += comm::ringBytesSent(op, payloadBytes, g.size());
    };
    using comm::OpType;
    const auto dt = ref::computeDtype(options.precision);
    const int64_t esize = static_cast<int64_t>(c10::elementSize(dt));
    const auto rows = batchRowsOf(mesh.shape(), mesh.world()->rank(), options.batchSize);
    const int64_t tokens = rows.length * options.seqLen, hidden = config.hiddenSize;
    // tp modules move [Bl, S, H] activations and their gradients in fp32
    // when the compute dtype is narrower (their partial sums, see tpEnter).
    const int64_t tpAct = tokens * hidden * (tpPartialSums(dt).wideInput ? 4 : esize);
    const int64_t k = config.numExpertsPerTok;
    const int64_t wsize = static_cast<int64_t>(c10::elementSize(kernels::routingDtype(dt)));
    size_t epLayer = 0;  // index into dispatch.rowsReceivedPerLayer
    // A tp-sharded linear pair (colwise in, rowwise out) around one module.
    auto tpModule = [&] {
      if (sp) {
        add(*tp, OpType::kAllGather, tpAct);      // sequence gather of the input
        add(*tp, OpType::kReduceScatter, tpAct);  // its adjoint
        add(*tp, OpType::kReduceScatter, tpAct);  // output to the sequence shards
        add(*tp, OpType::kAllGather, tpAct);      // its adjoint
      } else {
        add(*tp, OpType::kAllReduce, tpAct);  // rowwise Partial output
        add(*tp, OpType::kAllReduce, tpAct);  // colwise input gradient
      }
    };
    for (int64_t i = 0; i < config.numHiddenLayers; ++i) {
      const auto p = ref::layerPrefix(i);
      if (shardedOn(p + "self_attn.q_proj.weight", "tp")) tpModule();
      if (!config.isMoeLayer(i)) {
        if (shardedOn(p + "mlp.gate_proj.weight", "tp")) tpModule();
        continue;
      }
      const bool moeTp = shardedOn(p + "mlp.experts.gate_up_proj", "tp");
      const bool epOn = shardedOn(p + "mlp.experts.gate_up_proj", "ep");
      const bool loop = config.expertsImplementation == "loop";
      // Grouped experts keep fp32 partial sums; the loop computes in dt.
      const int64_t moeAct = loop ? tokens * hidden * esize : tpAct;
      if (moeTp && sp) {
        add(*tp, OpType::kAllGather, moeAct);                // x
        add(*tp, OpType::kReduceScatter, moeAct);            // x's adjoint
        add(*tp, OpType::kAllGather, tokens * k * 8);        // top-k ids (int64)
        add(*tp, OpType::kAllGather, tokens * k * wsize);    // top-k weights
        add(*tp, OpType::kReduceScatter, tokens * k * wsize);  // their adjoint
        add(*tp, OpType::kReduceScatter, moeAct);            // output
        add(*tp, OpType::kAllGather, moeAct);                // output's adjoint
      } else if (moeTp) {
        add(*tp, OpType::kAllReduce, moeAct);  // expert input gradient
        if (loop) {
          add(*tp, OpType::kAllReduce, moeAct);  // combined output
          add(*tp, OpType::kAllReduce, tokens * k * wsize);  // routing-weight gradient
        } else {
          // per expert row: [T*k, H] rows without EP; with EP the rows this
          // rank's experts received in this step's dispatch
          int64_t rowsHere = tokens * k;
          if (epOn)
            rowsHere = epLayer < dispatch.rowsReceivedPerLayer.size() ? dispatch.rowsReceivedPerLayer[epLayer] : -1;
          add(*tp, OpType::kAllReduce, rowsHere < 0 ? -1 : rowsHere * moeAct / tokens);
        }
      }
      if (epOn) {
        for (int c = 0; c < 5; ++c) add(*ep, OpType::kAllToAll, -1);
        ++epLayer;
      }
    }
    // Loss statistics in the routing/statistics dtype (fp32 for fp32 and bf16).
    add(*stats, OpType::kAllReduce, wsize);  // ce sum
    if (config.numMoeLayers() > 0) {
      add(*stats, OpType::kAllReduce, k * config.numExperts * wsize);  // selection counts [k, E]
      add(*stats, OpType::kAllReduce, config.numExperts * wsize);      // probability sums [E]
      add(*stats, OpType::kAllReduce, 8);                              // token count (double)
    }
    // The wrapper's collectives (gathers, gradient reductions) on its own
    // groups, as the store computes them (param_store.h expectedStepComm).
    for (const auto& e : store->expectedStepComm()) {
      auto& a = acc[{e.group, e.op}];
      if (a.calls == 0) a = e;
      else {
        a.calls += e.calls;
        if (a.bytesSent && e.bytesSent) *a.bytesSent += *e.bytesSent;
        else a.bytesSent.reset();
      }
    }
    add(*mesh.world(), OpType::kAllReduce, 8);  // grad norm (double)
    std::vector<CommExpectation> out;
    for (auto& [key, e] : acc) out.push_back(e);
    return out;
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

}  // namespace moe::parallel
