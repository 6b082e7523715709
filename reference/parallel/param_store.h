#pragma once
// ParamStore: the data-parallel wrapper seam of the distributed model.
//
// DistTrainer computes with PLAN-LOCAL parameters: the pieces tensor and
// expert parallelism give the rank (plan::AppliedPlan placements). A store
// decides where the fp32 masters of those pieces live between steps and how
// gradients are reduced:
//   - "none": every data-parallel rank keeps the whole plan-local tensor;
//     gradients are all-reduced in buckets, one all_reduce per bucket
//     (replicated data parallelism, DDP-like);
//   - "fsdp" / "zero3" (reference/parallel/stores/): masters sharded over the
//     data-parallel group, gathered for compute, gradients reduce-scattered
//     with one reduce-scatter per gather unit (gatherUnitOf: a transformer
//     layer, or the rest) and group, as FSDP2 reduces a fully_shard unit.
// Adding a store: one file in stores/ with its StoreFactory registration
// line (see param_store.cpp).
//
// Contract every store meets (the trainer relies on nothing else):
//  - get(name, dt) returns the plan-local tensor in dtype dt for this step's
//    compute, differentiable: backward lands in the store's masters. Calls
//    for the same (name, dt) within one step may return the same tensor.
//    Collective when the store gathers: every rank of the gather group must
//    call get() for the same names in the same order (the trainer's forward
//    order is the same on every rank).
//  - reduceGradients() (collective, after backward) leaves each master's
//    gradient equal to the matching slice of the single-device gradient of
//    the global objective (the per-rank objectives' gradients SUM to it) in
//    fp32, and returns this rank's share of the squared global grad norm such
//    that the world sum counts every element of every parameter exactly once.
//  - masters()/grads(): what AdamW steps on, same order, same shapes.
//  - paramShards()/gradShards(): the parameters as the checks see them, with
//    placements that describe exactly which global elements `local` holds.
//  - Own groups: every collective a store issues runs on a communicator it
//    creates itself, named "<name()>:<group>" (e.g. "fsdp:dp+ep",
//    "none:dp"; storeGroup() below), never on the mesh's shared groups, so
//    the flight recorder's counters of those groups are the store's traffic
//    alone. Groups of size 1 issue no collective.
//  - expectedStepComm(): after a step (reduceGradients() returned), the
//    collectives the store issued during that step on its own groups, per
//    (group, op): calls and logical bytes sent, computed analytically from
//    the parameter shapes, the dtypes get() was asked for, and the group
//    sizes (all_gather / reduce_scatter (n-1)/n x the gathered buffer incl.
//    padding; all_reduce 2(n-1)/n x the buffer; flight_recorder.h). run-plan
//    compares it with the recorder's counters of every "<name()>:" group.
//  - memory(): bytes of the tensors the store holds between steps, measured
//    from those tensors (not derived from the placements).
#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/registry.h"
#include "reference/parallel/shards.h"
#include "harness/mesh/device_mesh.h"
#include "reference/model/params.h"
#include "reference/plan/plan.h"

namespace moe::parallel {

// How one plan parameter's gradient is reduced (decided by the trainer from
// the plan and the model's communication).
struct GradReduction {
  // Mesh dims, other than tp, over which the parameter is replicated and the
  // batch is split: its gradient is summed over them (for a dense parameter
  // every data-parallel dim; for an ep-sharded expert its expert-data-parallel
  // dims, i.e. the data-parallel dims other than ep).
  std::vector<std::string> dataParallelDims;
  // The tp ranks' gradients are partial sums (q_norm/k_norm under attention
  // TP; every tp-replicated parameter under sequence parallelism): summed
  // over tp as well.
  bool tpPartial = false;
};

// Bytes per rank a store holds between steps (for memory reports).
struct StoreMemory {
  int64_t paramBytes = 0;      // fp32 masters
  int64_t gradBytes = 0;       // fp32 gradients
  int64_t optimizerBytes = 0;  // AdamW exp_avg + exp_avg_sq (fp32): 2 x paramBytes
  // Of paramBytes: padding the masters hold beyond the elements their
  // placements describe (e.g. a flat buffer padded to an even partition).
  int64_t paddingBytes = 0;
};

struct ParamStoreOptions {
  const plan::AppliedPlan* plan = nullptr;
  mesh::DeviceMesh* mesh = nullptr;
  // This rank's plan-local fp32 parameters, by name (plan.params order).
  const ref::ParamMap* local = nullptr;
  // Per plan.params entry.
  std::vector<GradReduction> reductions;
  // fsdp: where ep-sharded experts go: "edp" (sharded over their
  // expert-data-parallel dims) or "none" (left as the plan placed them).
  std::string expertSharding = "edp";
  // The dtype the forward reads most parameters in (bf16 under the bf16
  // policy; norm weights are still read in fp32): zero3 all-gathers its flat
  // buffers in it before the first get() of a layer says which dtype.
  torch::ScalarType computeDtype = torch::kFloat;
  // "none": gradients sharing a reduction group are all-reduced in buckets
  // of at most this many fp32 bytes (DDP's default bucket_cap_mb = 25).
  int64_t bucketCapBytes = int64_t{25} << 20;
};

class ParamStore {
 public:
  virtual ~ParamStore() = default;
  virtual std::string name() const = 0;
  // Start of a step: drop last step's gradients and gathered tensors.
  virtual void beginStep() = 0;
  // The plan-local parameter for compute. Returns: plan-local shape, dtype dt.
  virtual torch::Tensor get(const std::string& name, torch::ScalarType dt) = 0;
  // After backward; returns this rank's share of the squared grad norm.
  virtual double reduceGradients() = 0;
  virtual std::vector<torch::Tensor> masters() = 0;
  virtual std::vector<torch::Tensor> grads() = 0;
  virtual std::vector<ParamShard> paramShards() const = 0;
  virtual std::vector<ParamShard> gradShards() const = 0;
  virtual StoreMemory memory() const = 0;
  // See the contract above; valid after reduceGradients() of a step. The
  // default throws HarnessError naming the store: a store that does not
  // declare its traffic cannot pass the step communication check silently.
  virtual std::vector<CommExpectation> expectedStepComm() const;

  // ---- what only the store knows about its layout, for its judges -------
  // (harness/checks decide from these which checks concern a store; nothing
  // there names a store.) The defaults describe a store that holds every
  // parameter as paramShards() reports it and gathers nothing per parameter.
  //
  // A flat-partitioning store (zero3) keeps flat partitions, not the tensors
  // the placements describe: this rank's partitions of the parameters (group,
  // members in flat order, dims, a copy of the partition), for the
  // flat-partition check and the bytes the memory check expects. No
  // communication. Default: none.
  virtual std::vector<FlatPartition> flatPartitions() const { return {}; }
  // A store that shards parameters beyond the plan and all-gathers each of
  // them whole once per step for compute (FSDP, reshard_after_forward=False)
  // returns the prefix of the groups it gathers on ("fsdp:"), for the
  // gather-volume check. Default "": no per-parameter gathers.
  virtual std::string parameterGatherPrefix() const { return ""; }

  // --- added with deepseek_v3 ---
  // The plan-local master of `name` itself (not a copy), for a parameter
  // the model moves by its own rule after the optimizer step (deepseek_v3's
  // correction bias, deepseek_v3.h). Default: a HarnessError naming the
  // store (a store that shards or flattens its masters does not offer it).
  virtual torch::Tensor mutableMaster(const std::string& name);
  // ---- checkpoints (issue 19) ---------------------------------------------
  // The paramShards() view of tensors laid out like masters() (same order,
  // same shapes), e.g. AdamW's moments: what a distributed checkpoint saves
  // of them. Collective where paramShards() is (zero3 gathers). The default
  // throws HarnessError naming the store.
  //   likeMasters[i]: [shape of masters()[i]]
  virtual std::vector<ParamShard> shardsOf(const std::vector<torch::Tensor>& likeMasters) const;
};

// Creates the store named `name` ("none", "fsdp", "zero3", ...). Collective:
// may create mesh sub-communicators (same order on every rank). Throws
// HarnessError listing the known names for an unknown one.
std::unique_ptr<ParamStore> makeParamStore(const std::string& name, const ParamStoreOptions& options);
// Registered names, sorted.
std::vector<std::string> paramStoreNames();

// The plug-in interface of a store (common/registry.h): creates it.
class StoreFactory {
 public:
  static constexpr const char* kPluginKind = "data-parallel wrapper";
  virtual ~StoreFactory() = default;
  virtual std::string name() const = 0;  // the wrapper's name: "none", "fsdp", ...
  virtual std::unique_ptr<ParamStore> make(const ParamStoreOptions& options) const = 0;
};

// A store created by a function:
//   MOE_REGISTER(StoreFactory, FunctionStoreFactory, "fsdp", makeFsdpStore);
class FunctionStoreFactory : public StoreFactory {
 public:
  using Make = std::unique_ptr<ParamStore> (*)(const ParamStoreOptions&);
  FunctionStoreFactory(std::string name, Make make) : name_(std::move(name)), make_(make) {}
  std::string name() const override { return name_; }
  std::unique_ptr<ParamStore> make(const ParamStoreOptions& o) const override { return make_(o); }

 private:
  std::string name_;
  Make make_;
};

// The built-in stores' constructors (each file registers its factory).
std::unique_ptr<ParamStore> makeReplicatedStore(const ParamStoreOptions& options);
std::unique_ptr<ParamStore> makeFsdpStore(const ParamStoreOptions& options);
std::unique_ptr<ParamStore> makeZero3Store(const ParamStoreOptions& options);

// ---- helpers shared by the stores -------------------------------------------
// The checks' view of a tensor that holds exactly what `pp`'s placements say.
// local: plan-local shape of pp on this rank
ParamShard planShard(const plan::ParamPlacement& pp, const torch::Tensor& local);
// The ranks that hold the same elements of a parameter replicated over
// `dims` count it once in the grad norm: the coordinate-0 rank of those dims.
bool countsOnce(const mesh::DeviceMesh& mesh, const std::vector<std::string>& replicatedDims);
// The store-owned group along `dims` (mesh dim order, dims the mesh lacks
// ignored), named "<store>:<mesh group name>". Collective over the world the
// first time (same order on every rank), cached by name afterwards.
std::shared_ptr<comm::Communicator> storeGroup(mesh::DeviceMesh& mesh, const std::string& store,
                                               const std::vector<std::string>& dims);
// The unit a parameter is gathered / reduced with (FSDP2's fully_shard
// granularity): "model.layers.<i>" for a transformer layer's parameters,
// "model" for the rest (embedding, final norm, lm_head).
std::string gatherUnitOf(const std::string& paramName);
// Adds `bytes` sent by one call of `op` on `group` to `out` (merging with an
// existing (group, op) entry). No entry for groups of size 1.
void addExpectedCall(std::vector<CommExpectation>& out, const comm::Communicator& group,
                     comm::OpType op, int64_t bytesSent);

}  // namespace moe::parallel
