#pragma once
// "zero3": a ZeRO stage-3 style data-parallel wrapper (ParamStore).
//
// Grouping: parameters are grouped into units, one per transformer layer
// ("model.layers.{i}") plus one for everything else (embedding, lm_head,
// final norm: "model"). Within a unit, parameters that need the same
// gradient reduction share a FLAT GROUP: the same data-parallel dims
// (GradReduction::dataParallelDims: every data-parallel dim for a dense
// parameter, the expert-data-parallel dims for an ep-sharded expert, never
// ep), the same tp sum (tpPartial), and the same mesh dims over which the
// rank's copy is a replica counted once in the grad norm.
//
// Partitioning: a flat group's plan-local fp32 tensors are flattened and
// concatenated in plan order into one buffer of N elements, zero-padded to
// n * ceil(N / n) (n = the size of the data-parallel group), and rank r of
// the group keeps only elements [r*P, (r+1)*P), P = ceil(N / n). masters()
// are these partitions (AdamW works on flat partitions; padding stays 0:
// its gradient is 0 and weight decay of 0 is 0).
//
// Gather on use: the first get() of any parameter of a unit all-gathers
// every flat group of the unit in the compute dtype (bf16 parameters under
// bf16) through one differentiable op; the parameters are views into the
// gathered buffers. Under bf16 the op also yields an fp32 copy of each
// gathered buffer (not communicated) for parameters the model reads in fp32
// (norm weights), so their gradients stay fp32 as on one device. The op's
// backward reduce-scatters each flat group's gradient IN FP32 (bf16 view
// gradients are widened first) into the owner partitions. Every parameter of
// a layer is in the autograd graph whenever any is (attention always is), so
// every rank runs every unit's backward and issues the same reduce-scatters.
// tpPartial groups are then summed over tp (fp32) in reduceGradients().
//
// "Released after": the store drops its reference to a unit's gathered
// buffers once every member has been handed out; the buffers live on only
// through the trainer's per-step get() cache and the tensors autograd saves
// for the backward, i.e. until the step's backward ends. The backward does
// NOT re-gather (DeepSpeed does, to free parameters between forward and
// backward): per step each flat group is all-gathered once and
// reduce-scattered once.
//
// Communication per step and flat group of n > 1 ranks (ring bytes as the
// flight recorder counts them): all_gather (n-1)/n * padded * sizeof(compute
// dtype) and reduce_scatter (n-1)/n * padded * 4, on the store's own
// communicator of the group's dims ("zero3:<dims>", storeGroup()), plus, for
// a tp-partial group, an fp32 all-reduce of the partition on "zero3:tp";
// groups of one rank communicate nothing (expectedStepComm()).
//
// Checks: flat partitions are not expressible as placements, so
// paramShards()/gradShards() gather the flat buffers (COLLECTIVE over each
// flat group, in construction order on every rank) and split them into the
// plan-local tensors with the plan's placements. Those gathers run on
// separate communicators named "zero3-check:<dims>" so a step's "zero3:"
// counters show the scheme's own traffic apart from the checks'. partitions() gives
// the flat partitions themselves for the flat-partition check.
#include <memory>
#include <vector>

#include "reference/parallel/shards.h"
#include "reference/parallel/param_store.h"

namespace moe::parallel {

class Zero3Store : public ParamStore {
 public:
  explicit Zero3Store(const ParamStoreOptions& options);
  ~Zero3Store() override;

  std::string name() const override { return "zero3"; }
  void beginStep() override;
  // Collective on the first call for a unit in a step (see above).
  torch::Tensor get(const std::string& name, torch::ScalarType dt) override;
  double reduceGradients() override;
  std::vector<torch::Tensor> masters() override;  // [P] per flat group
  std::vector<torch::Tensor> grads() override;    // [P] per flat group
  // Collective (see above): every rank calls them in the same order.
  std::vector<ParamShard> paramShards() const override;
  std::vector<ParamShard> gradShards() const override;
  // Collective like paramShards(): likeMasters are [P] per flat group.
  std::vector<ParamShard> shardsOf(const std::vector<torch::Tensor>& likeMasters) const override;
  // Partition bytes per rank (paddingBytes: the part of this rank's
  // partitions beyond the flat groups' real elements).
  StoreMemory memory() const override;
  // One all-gather (compute dtype) and one fp32 reduce-scatter per flat group
  // of more than one rank, plus the tp all-reduce of tp-partial groups.
  std::vector<CommExpectation> expectedStepComm() const override;

  // The same parameters in the replicated layout (every plan-local tensor
  // whole): what "none" holds.
  StoreMemory replicatedMemory() const;
  // This rank's flat partitions (parameters, or the last reduced gradients),
  // no communication.
  std::vector<FlatPartition> partitions(bool gradients = false) const;
  // The param_store.h hook: partitions() of the parameters.
  std::vector<FlatPartition> flatPartitions() const override { return partitions(); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::unique_ptr<ParamStore> makeZero3Store(const ParamStoreOptions& options);

}  // namespace moe::parallel
