#pragma once
// Mutation points: the places in the reference implementation where a
// mutant (issue 7, reference/mutants/registry.cpp) plants a bug of a known
// class, so the harness can prove that its checks catch it.
//
// Contract:
//  - One process-wide table of plain function pointers, all null by
//    default. A null pointer is the correct code path: each injection site
//    costs one load and one predictable branch (`if (auto f = ...)`), no
//    string compare, no allocation. Mutants are always compiled in.
//  - Only activateMutant() (mutant_registry.h) writes the table, once, at
//    start-up of a rank process (`run-plan --mutant NAME`), before any
//    collective; every rank of a job activates the same mutant.
//  - A hook sees exactly the values the correct code computed at its site
//    and may change them in place (shapes stay as documented per hook).
//
// The sites (file: what the correct code does there):
//  - plan.cpp applyPlan pass 1: the placement a style gives a parameter.
//  - dist_model.cpp loadLocalParams / loading.cpp rank0_broadcast: the
//    placements a loader slices a checkpoint tensor with.
//  - loading.cpp finish(): each parameter's final local shard, every path.
//  - dist_model.cpp DistTrainer ctor: how each parameter's grad is reduced.
//  - dist_model.cpp forwardLoss: the aux statistics' all-reduce.
//  - dist_model.cpp moeLayer / ep_dispatch.cpp: the all-reduce of the
//    experts' Partial outputs over tp.
//  - ep_dispatch.cpp: the per-expert row counts the dispatch splits follow.
//  - every ParamStore (param_store.cpp, stores/fsdp_store.cpp,
//    stores/zero3_store.cpp): the reduced gradient of a parameter, and
//    whether this rank counts it in the global grad norm.
//  - stores/zero3_store.cpp constructor: each flat group's initial master
//    partition, right after the group's communicators were created.
//  - stores/fsdp_store.cpp build(): the mesh dims a parameter is sharded
//    over and its gradient summed over.
//  - dist_model.cpp step: the expert loads of deepseek_v3's bias rule.
//  - dist_model.cpp moeLayer: the experts deepseek_v3's group scores see.
//  - parallel/dist_checkpoint.cpp: the offsets a saved piece is recorded
//    at, when the completion marker is written, the placements and the
//    moments' slices a resume reads.
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "reference/placement/placement.h"

namespace moe::comm {
class Communicator;
}
namespace moe::mesh {
class MeshShape;
class DeviceMesh;
}  // namespace moe::mesh
namespace moe::plan {
struct ParamPlacement;
}
namespace moe::parallel {
struct LoadPath;
struct GradReduction;
}  // namespace moe::parallel

namespace moe::mutants {

struct MutationPoints {
  // plan.cpp, pass 1: `placement` is what style `style` gives parameter
  // `param` on its mesh dim; the hook may replace it.
  void (*placeParameter)(const std::string& style, const std::string& param, ref::Placement& placement) = nullptr;

  // Loaders: `placements` (one per mesh dim) are the plan's placements of
  // `param`; the loader slices the checkpoint tensor with what the hook
  // leaves there (the declared placements stay the plan's).
  void (*loaderPlacements)(const plan::ParamPlacement& param, std::vector<ref::Placement>& placements) = nullptr;

  // loading.cpp, every path: called on every rank with each parameter's
  // final local shard, in plan order; may modify it or issue collectives on
  // `world` (the same ones on every rank).
  //   local: [local shape of param] float32
  void (*afterLoadParam)(comm::Communicator& world, const mesh::MeshShape& mesh, const parallel::LoadPath& path,
                         const plan::ParamPlacement& param, at::Tensor& local) = nullptr;

  // dist_model.cpp: how `param`'s gradient will be reduced (decided once, in
  // the trainer's constructor); `sequenceParallel`: the plan runs SP.
  void (*gradReduction)(const plan::ParamPlacement& param, bool sequenceParallel,
                        parallel::GradReduction& reduction) = nullptr;

  // dist_model.cpp forwardLoss: true skips the all-reduce of the router
  // aux statistics (counts, probability sums, token count).
  bool (*auxStatsLocal)() = nullptr;

  // The experts' Partial(sum) outputs over tp: returns what the caller uses
  // instead of their all-reduce. Null: the all-reduce.
  //   partial: [rows, hidden] compute dtype
  at::Tensor (*reduceExpertOutputs)(const at::Tensor& partial, comm::Communicator& tp) = nullptr;

  // ep_dispatch.cpp: rows per (destination rank, local expert) this rank
  // dispatches, before the split sizes are exchanged. A hook may only lower
  // counts, from the end of the expert-major order: the dispatch then sends
  // the first sum(counts) permuted rows and the rows it did not send
  // contribute zero.
  //   counts: [ep, local experts] int64
  void (*dispatchCounts)(at::Tensor& counts) = nullptr;

  // Every ParamStore, after a parameter's gradient was reduced over its
  // group (`groupSize` ranks): may rescale it. The zero3 store calls it once
  // per parameter with the piece of the parameter its flat partition holds
  // (possibly empty: the rank owns none of it), in plan order.
  //   grad: [the store's local shape of param] float32, or (zero3) [piece] 1-D
  void (*reducedGrad)(const plan::ParamPlacement& param, const mesh::DeviceMesh& mesh, int64_t groupSize,
                      at::Tensor& grad) = nullptr;

  // Every ParamStore: whether this rank adds `param`'s squared gradient to
  // the global norm (`counts` holds the correct answer: exactly one rank of
  // the replicating group).
  void (*countsInNorm)(const plan::ParamPlacement& param, bool& counts) = nullptr;

  // zero3_store.cpp constructor, once per flat group in construction order
  // (the same on every rank): `groupDims` are the dims the group is
  // partitioned over (experts: edp, dense: all data-parallel dims). May
  // modify this rank's partition or issue collectives on mesh.world(); a
  // hook that issues them on some ranks only desynchronises the job.
  //   master: [partition elements] float32 (a leaf that requires grad)
  void (*zero3GroupInit)(const mesh::DeviceMesh& mesh, const std::vector<std::string>& groupDims,
                         at::Tensor& master) = nullptr;
  // stores/fsdp_store.cpp, once per parameter in plan order while the store
  // is built (every rank): `dims` holds the mesh dims the correct code sums
  // `param`'s gradient over (GradReduction::dataParallelDims: every
  // data-parallel dim for a dense parameter, the expert-data-parallel dims
  // for an ep-sharded expert). The store shards the parameter over those of
  // size > 1 that `param`'s plan placements leave replicated (with
  // --fsdp-experts none, none for ep-sharded experts), all-reduces the
  // gradient over the others (the shard, after its reduce-scatter, when it
  // shards) and reports placements that describe that storage. The hook
  // may replace the list with other mesh dim names; it must do the same on
  // every rank.
  void (*fsdpGroupDims)(const plan::ParamPlacement& param, const mesh::DeviceMesh& mesh,
                        std::vector<std::string>& dims) = nullptr;

  // --- gpt_oss ---
  // dist_model.cpp, gpt_oss experts under MoE tensor parallelism: true adds
  // the row-parallel down_proj_bias on every tp rank before the reduction
  // (so it is counted tp times) instead of once after it.
  bool (*rowParallelBiasPerRank)() = nullptr;
  // --- added with deepseek_v3 ---
  // dist_model.cpp step: true updates the correction biases from this
  // rank's own expert loads (the all-reduce over the token-partitioning
  // group still runs, on a copy, so the traffic is unchanged).
  bool (*biasLoadsLocal)() = nullptr;
  // dist_model.cpp moeLayer (deepseek_v3 router under ep): true scores the
  // expert groups over this rank's local experts only (the others count as
  // -inf), instead of over all experts.
  bool (*groupScoresLocalExperts)() = nullptr;
  // ---- checkpoints (issue 19), parallel/dist_checkpoint.cpp ----
  // Save: the global offsets of one piece a rank writes (`localOffsets`: the
  // piece's offsets inside the rank's local tensor); an expert tensor's dim 0
  // is the global expert index.
  void (*savePieceOffsets)(bool isExpert, const std::vector<int64_t>& localOffsets,
                           std::vector<int64_t>& globalOffsets) = nullptr;
  // Save: true writes the completion marker right after INTENT, before any
  // rank file (the marker must be written last).
  bool (*completeMarkerFirst)() = nullptr;
  // Resume: the placements the checkpoint's parameters are read with (the
  // declared placements stay the plan's).
  void (*resumePlacements)(const plan::ParamPlacement& param, std::vector<ref::Placement>& placements) = nullptr;
  // Resume: true reads each optimizer moment as the box at offset 0 of the
  // rank's local shape (the saving rank 0's piece) instead of the rank's
  // own slice: the moments are not resharded with their parameter.
  bool (*momentsNotResharded)() = nullptr;
};

namespace detail {
inline MutationPoints gPoints;  // written by activateMutant() only
}

// The table the injection sites read.
inline const MutationPoints& points() { return detail::gPoints; }

}  // namespace moe::mutants
