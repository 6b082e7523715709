#pragma once
// Loading paths: how each rank turns a checkpoint into its plan-local fp32
// parameter shards (issue 5 item 4). One contract, three ways, selectable
// per run (`run-plan --load NAME`):
//
//  - shard_on_read:   every rank reads only its own slices of every tensor
//                     (loadLocalParams, DistTensor::distributeFromSource).
//                     No communication.
//  - rank0_broadcast: world rank 0 reads each full tensor and broadcasts it
//                     over the world communicator, one tensor at a time in
//                     plan order; every rank slices its piece out of the
//                     received tensor (the memory-efficient loaders'
//                     pattern). EP-sharded parameters (isEpSharded) are the
//                     exception: every rank reads its own experts with
//                     shard-on-read and NEVER takes them from rank 0, whose
//                     experts are not the other ep ranks' experts. After the
//                     last tensor the ranks cross-check a manifest (count and
//                     hash of the broadcast names) with one all_gather.
//  - init_then_load:  every parameter is first created empty with its local
//                     shape (computeLayout), then filled in place box by box
//                     from checkpoint slices (Hugging Face's to_empty + load).
//                     A parameter whose boxes do not cover it is an error
//                     naming the rank and the tensor.
//
// Contract (all paths):
//  - Collective over the world (every rank calls loadParams with the same
//    plan and path); the result is bitwise identical across paths: for every
//    parameter of plan.params, in plan order, the piece computeLayout gives
//    this rank, as contiguous float32 (the same values as loadLocalParams),
//    on the world communicator's device (Communicator::device(): the run's
//    device lane). Checkpoint data is read on the host and moved once.
//  - Every collective goes through moe::comm::Communicator, so it is
//    flight-recorded and fingerprint-verified: ranks whose loading issues
//    different collectives fail with comm::CollectiveMismatch naming both
//    calls, not with a timeout.
//  - A checkpoint tensor whose shape differs from the plan's global shape is
//    a HarnessError naming the rank, the tensor and both shapes (checked on
//    every rank from the source's metadata before any broadcast).
//  - `source` must present fused expert names (wrap a hub-layout file in
//    io::FusedExpertView); every rank needs one (EP-sharded tensors are read
//    locally), but under rank0_broadcast only rank 0 reads non-EP tensors.
//
// How to add a loading path (the project's one plug-in idiom,
// common/registry.h): a function meeting the contract above (or a class
// deriving from Loader below), in its own file under reference/parallel/,
// ending with `MOE_REGISTER(Loader, FunctionLoader, "<name>", loadMine);`;
// tests/loading_test.cpp runs every registered path.
#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/registry.h"
#include "harness/comm/communicator.h"
#include "harness/mesh/device_mesh.h"
#include "reference/io/tensor_source.h"
#include "reference/model/params.h"
#include "reference/placement/layout.h"
#include "reference/plan/plan.h"

namespace moe::parallel {

// A loading path, by name (the registry below holds the implementations).
// The built-in ones have constants, so code and tests can name them.
struct LoadPath {
  std::string name = "shard_on_read";
  bool operator==(const LoadPath& o) const { return name == o.name; }
  bool operator!=(const LoadPath& o) const { return name != o.name; }
  static const LoadPath kShardOnRead, kRank0Broadcast, kInitThenLoad;
};
inline const LoadPath LoadPath::kShardOnRead{"shard_on_read"};
inline const LoadPath LoadPath::kRank0Broadcast{"rank0_broadcast"};
inline const LoadPath LoadPath::kInitThenLoad{"init_then_load"};

// Registered names, sorted.
std::vector<std::string> loadPathNames();
const char* loadPathName(const LoadPath& path);
// Throws HarnessError "unknown loading path 'x' (known: init_then_load, ...)".
LoadPath parseLoadPath(const std::string& name);

// An expert tensor sharded on the `ep` mesh dim: each ep rank owns different
// experts, so rank0_broadcast reads it per rank and never broadcasts it.
bool isEpSharded(const plan::ParamPlacement& param, const mesh::MeshShape& mesh);

// Test and mutation hooks. Default-constructed hooks give the correct path;
// each hook is the one seam where a faulty loader (tests) or a mutant
// (issue 7) changes behaviour, so such a variant is a few lines.
struct LoadHooks {
  // rank0_broadcast: sends one full non-EP tensor from world rank 0 to every
  // rank. Default: world.broadcast(full, 0). A test replaces it on one rank
  // (skip it, send another tensor) to prove the desync detection.
  //   full: [param.globalShape] float32; rank 0: the checkpoint values,
  //   other ranks: uninitialised until the broadcast fills it.
  std::function<void(comm::Communicator& world, const plan::ParamPlacement& param, at::Tensor& full)>
      broadcast;
  // Every path: called on every rank with each parameter's final local
  // shard, in plan order, before it is stored; may modify it in place or
  // issue collectives. E.g. the mutant ep_rank0_broadcast_overwrite is
  //   if (isEpSharded(param, mesh.shape())) world.broadcast(local, 0);
  //   local: [local shape of param] float32
  std::function<void(comm::Communicator& world, const plan::ParamPlacement& param, at::Tensor& local)>
      afterParam;
  // init_then_load: when set, the empty parameters are filled with this
  // value before loading (NaN makes a missed element visible in a bitwise
  // comparison); unset: at::empty, uninitialised, as to_empty() gives.
  std::optional<float> emptyFill;
  // init_then_load: returns false to skip copying one box of a parameter
  // (a test's faulty fill). box: one global range per dim.
  std::function<bool(const plan::ParamPlacement& param, const std::vector<ref::IndexRange>& box)>
      copyBox;
};

struct LoadOptions {
  LoadPath path;  // default: shard_on_read
  const io::TensorSource* source = nullptr;  // required, on every rank
  mesh::DeviceMesh* mesh = nullptr;          // required
  const plan::AppliedPlan* plan = nullptr;   // required: what to load, where
  // The communicator rank0_broadcast broadcasts over (root: its rank 0).
  // nullptr: mesh->world().
  std::shared_ptr<comm::Communicator> world;
  LoadHooks hooks;
};

// The rank's plan-local fp32 shards, by the chosen path (see the contract
// above). Collective over the world.
ref::ParamMap loadParams(const LoadOptions& options);

// The plug-in interface of a loading path (common/registry.h).
class Loader {
 public:
  static constexpr const char* kPluginKind = "loading path";
  virtual ~Loader() = default;
  virtual std::string name() const = 0;
  // options: validated by loadParams (source, mesh, plan set; world set and
  // spanning the mesh).
  virtual ref::ParamMap load(const LoadOptions& options) const = 0;
};

// A loading path that is a function:
//   MOE_REGISTER(Loader, FunctionLoader, "shard_on_read", loadShardOnRead);
class FunctionLoader : public Loader {
 public:
  using Load = ref::ParamMap (*)(const LoadOptions&);
  FunctionLoader(std::string name, Load load) : name_(std::move(name)), load_(load) {}
  std::string name() const override { return name_; }
  ref::ParamMap load(const LoadOptions& options) const override { return load_(options); }

 private:
  std::string name_;
  Load load_;
};

}  // namespace moe::parallel
