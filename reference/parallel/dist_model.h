#pragma once
// The distributed MoE model and training step: the reference model's math
// (reference/model/qwen3_moe.h) on this rank's local parameters, with the
// communication an applied plan asks for, such that loss, gradients and
// parameters equal the single-device reference run.
//
// Families: what differs between them is asked of the config's family
// (reference/model/family.h), as the single-device model does: q/k norms
// (qkNorm) and how the expert outputs are combined (fp32Combine, in every
// combine: single rank, MoE tensor parallelism, EP dispatch). The router is
// the shared one (moe_block.h routeTokens: fp32 softmax over all experts,
// top-k, renormalised when the config says so: always for Mixtral).
//
// Mesh roles:
//  - tp: tensor (and sequence) parallelism; tp ranks see the same batch rows.
//  - every other dim (dp, ep, edp, ...) is data-parallel: the global batch
//    [B, S] is split over them in contiguous row blocks (torch.chunk sizes),
//    row-major over those dims in mesh order.
//  - ep additionally hosts the experts (grouped_gemm + ep_router).
//
// Loss: CE summed locally and divided by the GLOBAL B*(S-1); the router aux
// statistics of routerAuxStats are all-reduced over the ranks that partition
// the tokens (data-parallel dims, plus tp under sequence parallelism) before
// aux is formed, so the loss is the single-device loss. The backward uses a
// per-rank objective whose gradients SUM over those ranks to the
// single-device gradient: ce_sum_local / N + coef * E * sum(f_global *
// probSums_local / N_tokens).
//
// Gradient reduction (sums, no rescaling needed after the objective above;
// the data-parallel wrapper, a ParamStore, performs it):
//  - a parameter's gradient is summed over the data-parallel dims on
//    which the parameter is NOT sharded (experts sharded on ep: their
//    expert-data-parallel group);
//  - plus tp for tp-replicated parameters whose tp-rank gradients are
//    partial: q_norm/k_norm under attention TP (each rank normalises its own
//    heads), and every tp-replicated parameter under sequence parallelism
//    (norms, router, embedding, lm_head see the local sequence shard).
// Grad norm: each parameter's local sum of squares is counted by exactly one
// rank of the group replicating it (coordinate 0 on every dim it is not
// sharded on), then summed over the world.
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "reference/parallel/shards.h"
#include "harness/mesh/device_mesh.h"
#include "reference/io/tensor_source.h"
#include "reference/model/params.h"
#include "reference/parallel/param_store.h"
#include "reference/plan/plan.h"
#include "reference/train/trainer.h"

namespace moe::parallel {

// The rank's local parameters (fp32 masters) sliced from full tensors held
// by every rank (no communication).
ref::ParamMap distributeParams(const plan::AppliedPlan& plan, mesh::DeviceMesh& mesh,
                               const ref::ParamMap& full);
// The same read straight from a checkpoint: only the rank's pieces are read.
ref::ParamMap loadLocalParams(const plan::AppliedPlan& plan, mesh::DeviceMesh& mesh,
                              const io::TensorSource& source);

// Rows of the global batch this rank trains on: [start, start + length).
struct BatchRows {
  int64_t start = 0;
  int64_t length = 0;
  int dpRank = 0, dpSize = 1;
};
BatchRows batchRowsOf(const mesh::MeshShape& mesh, int rank, int64_t batchSize);

// Per-step communication the distributed step issued (for the comm check).
struct DispatchStats {
  int64_t tokensSent = 0;  // dispatched rows (tokens x top-k) summed over MoE layers
  // Rows this rank's experts computed, per EP MoE layer in layer order.
  std::vector<int64_t> rowsReceivedPerLayer;
};

// Options of the distributed run beyond the single-device TrainOptions.
struct DistOptions {
  // Data-parallel wrapper: a ParamStore name (param_store.h): "none", ...
  std::string wrapper = "none";
  // fsdp: "edp" shards ep-sharded experts over their expert-data-parallel
  // dims; "none" leaves them as the plan placed them.
  std::string expertSharding = "edp";
};

class DistTrainer {
 public:
  // localParams: this rank's plan-local fp32 shards (distributeParams /
  // loadLocalParams). options: the same TrainOptions as the single-device
  // run (global batch size, seq len, seed, precision, AdamW, clipping).
  // Collective: creates the mesh groups it needs, in the same order on every
  // rank. Throws HarnessError for a plan the model cannot run.
  DistTrainer(ref::ModelConfig config, mesh::DeviceMesh& mesh, plan::AppliedPlan plan,
              const ref::ParamMap& localParams, ref::TrainOptions options,
              DistOptions distOptions = {});
  ~DistTrainer();

  // One step on this rank's part of trainBatch(step); collective. The record
  // holds the GLOBAL loss, ce, aux and grad norm (same on every rank);
  // checksums are left empty (local shards are not comparable to the
  // reference's; compare shards with the checks instead).
  ref::StepRecord step();

  const plan::AppliedPlan& plan() const;
  const DispatchStats& lastDispatch() const;
  // The data-parallel wrapper holding the masters (memory(), name()).
  const ParamStore& store() const;
  // Bytes of the AdamW state (exp_avg + exp_avg_sq) this rank holds now,
  // measured from the optimizer's tensors (0 before the first step).
  int64_t optimizerStateBytes() const;

  // The collectives one step() issues on this rank, per (group, op), as the
  // plan implies them (calls always; logical bytes where they do not depend
  // on the routing). Per layer, forward + backward:
  //  - attention / dense MLP under TP: one all_reduce of [Bl, S, H] in the
  //    forward (rowwise output) and one in the backward (colwise input
  //    gradient); under sequence parallelism instead an all_gather and a
  //    reduce_scatter in each direction;
  //  - MoE TP (moe_experts_allreduce): the expert outputs' all_reduce in the
  //    forward and the expert input gradient's all_reduce in the backward
  //    (per expert row with the grouped implementation, after the combine
  //    with the loop one, whose routing-weight gradient is all-reduced too);
  //    under sequence parallelism: all_gather of x, top-k ids and weights,
  //    reduce_scatter of the output, and their adjoints;
  //  - EP: all_to_all of the split sizes, dispatch and combine forward, and
  //    the two reverse all_to_alls backward (bytes follow the routing and are
  //    checked as the dispatch volume instead).
  // Plus the loss statistics' all_reduces (ce; counts, probabilities and
  // token count when there are MoE layers) on the data-parallel group, the
  // wrapper's gradient reduction, and one all_reduce of the grad norm.
  // Call it after the step it describes (EP byte counts use that step's
  // routing).
  std::vector<CommExpectation> expectedStepComm() const;

  // Shards for harness/checks: current parameters, or the last step's
  // reduced gradients (before clipping), as the store holds them; their
  // placements say which global elements each holds. ParamShard::style is
  // ParamPlacement::primaryStyle() (the sharding style; for gate_up under
  // ep x tp: "grouped_gemm"), the full list is in plan(). Collective when
  // the store gathers for its checks (zero3): every rank calls them in the
  // same order. The returned tensors may be the store's own: clone them to
  // keep a snapshot across steps.
  std::vector<ParamShard> paramShards() const;
  std::vector<ParamShard> gradShards() const;

  // ---- checkpoints (issue 19) -----------------------------------------------
  // Steps taken so far: the data position (the next step trains batch
  // stepsTaken() + 1) and, after a step, AdamW's step count.
  int64_t stepsTaken() const;
  // AdamW's first (secondMoment = false) or second moments described as
  // paramShards() describes the parameters (ParamStore::shardsOf; collective
  // where paramShards() is). Zero tensors before the first step.
  std::vector<ParamShard> optimizerShards(bool secondMoment) const;
  // Resume: the state after `step` steps of an earlier run. The moments are
  // plan-local fp32 tensors (the layout loadLocalParams gives: read from a
  // checkpoint with this run's plan); they are put into the store's master
  // layout by a throwaway store of the same wrapper built from them (its
  // masters(); collective like the store's constructor), so no wrapper needs
  // an inverse of its own layout. The step counter continues from `step`.
  void restoreState(int64_t step, const ref::ParamMap& expAvgLocal, const ref::ParamMap& expAvgSqLocal);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe::parallel
