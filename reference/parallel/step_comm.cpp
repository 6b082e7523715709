// DistTrainer::expectedStepComm: the collectives one training step issues,
// derived from what the styles declared (layer_plan.h) and the step's
// routing, apart from the step itself so that dist_model.cpp stays a
// readable size.
#include "reference/parallel/step_comm.h"

#include <map>

#include "harness/comm/flight_recorder.h"
#include "kernels/routing.h"
#include "reference/parallel/dist_model.h"
#include "reference/model/family.h"
#include "reference/model/params.h"

namespace moe::parallel {

std::vector<CommExpectation> expectedStepComm(const StepCommInputs& in) {
  const auto& config = in.config;
  const auto& options = in.options;
  const auto& mesh = in.mesh;
  const auto& layers = in.layers;
  const bool sp = in.sp;
  const comm::Communicator* tp = &in.tp;
  const comm::Communicator* ep = &in.ep;
  const comm::Communicator* stats = &in.stats;
  const ParamStore* store = &in.store;
  const DispatchStats& dispatch = in.dispatch;
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
  const int64_t tpAct = tokens * hidden * ((dt != torch::kFloat && dt != torch::kDouble) ? 4 : esize);
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
    const LayerPlan& lp = layers[static_cast<size_t>(i)];
    if (lp.attnTp) tpModule();
    if (!config.isMoeLayer(i)) {
      if (lp.mlpTp) tpModule();
      continue;
    }
    const bool moeTp = lp.moeTp;
    const bool epOn = lp.epOn;
    const bool loop = config.expertsImplementation == "loop";
    // Grouped experts keep fp32 partial sums; the loop computes in dt. The
    // loop's combined output is in the routing dtype under the family's fp32
    // combine (moe_block.h loopExpertsForward), except after EP dispatch,
    // whose combine rounds to dt (ep_dispatch.h).
    const int64_t moeAct = loop ? tokens * hidden * esize : tpAct;
    const bool wideLoopOut = loop && !epOn && ref::familyOf(config).fp32Combine();
    const int64_t moeOut = wideLoopOut ? tokens * hidden * wsize : moeAct;
    if (moeTp && sp) {
      add(*tp, OpType::kAllGather, moeAct);                // x
      add(*tp, OpType::kReduceScatter, moeAct);            // x's adjoint
      add(*tp, OpType::kAllGather, tokens * k * 8);        // top-k ids (int64)
      add(*tp, OpType::kAllGather, tokens * k * wsize);    // top-k weights
      add(*tp, OpType::kReduceScatter, tokens * k * wsize);  // their adjoint
      add(*tp, OpType::kReduceScatter, moeOut);            // output
      add(*tp, OpType::kAllGather, moeOut);                // output's adjoint
    } else if (moeTp) {
      add(*tp, OpType::kAllReduce, moeAct);  // expert input gradient
      if (loop) {
        add(*tp, OpType::kAllReduce, moeOut);  // combined output
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
    if (lp.sharedTp) tpModule();  // deepseek_v3's shared experts under tp
  }
  // Loss statistics in the routing/statistics dtype (fp32 for fp32 and bf16).
  add(*stats, OpType::kAllReduce, wsize);  // ce sum
  const auto& family = ref::familyOf(config);
  if (config.numMoeLayers() > 0 && family.biasCorrectedRouter())  // deepseek_v3's bias rule
    add(*stats, OpType::kAllReduce, config.numMoeLayers() * config.numExperts * 4);  // expert loads, fp32
  if (config.numMoeLayers() > 0 && family.routerAuxLoss()) {
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

}  // namespace moe::parallel
