// How to add a loading path (the project's one plug-in idiom,
// common/registry.h): a function meeting loading.h's contract, in its own
// file under reference/parallel/, ending with
// `MOE_REGISTER(Loader, FunctionLoader, "<name>", loadMine);`;
// tests/loading_test.cpp runs every registered path against an independent
// slice of the checkpoint.
#include "reference/parallel/loading.h"

#include <cstdint>

#include "common/error.h"
#include "reference/mutants/mutation_points.h"
#include "reference/parallel/dist_model.h"
#include "reference/placement/dist_tensor.h"

namespace moe::parallel {

using plan::ParamPlacement;
using ref::ParamMap;

namespace {

int worldRank(const LoadOptions& o) { return o.mesh->world()->rank(); }

// Every rank checks the checkpoint's metadata against the plan before any
// data moves, so a wrong file is the same clear error on every rank rather
// than rank 0 failing while the others wait in a broadcast.
void checkGlobalShape(const LoadOptions& o, const ParamPlacement& p) {
  const auto shape = o.source->shape(p.name);
  if (shape != p.globalShape)
    fail("rank ", worldRank(o), ": checkpoint tensor ", p.name, " (", o.source->where(), ") has shape ",
         torch::IntArrayRef(shape), ", config expects ", torch::IntArrayRef(p.globalShape));
}

// Every path ends here: the shard moves to the world's device (once: read on
// the host, a no-op on the CPU lane) before the hooks, which may issue
// collectives on it.
void finish(const LoadOptions& o, comm::Communicator& world, const ParamPlacement& p, at::Tensor local,
            ParamMap& out) {
  local = local.to(world.device());
  if (o.hooks.afterParam) o.hooks.afterParam(world, p, local);
  if (auto f = mutants::points().afterLoadParam) f(world, o.mesh->shape(), o.path, p, local);
  out.insert(p.name, std::move(local));
}

ParamMap loadShardOnRead(const LoadOptions& o) {
  // loadLocalParams is the shard-on-read implementation; the hook runs on
  // its result so every path offers the same seam.
  ParamMap read = loadLocalParams(*o.plan, *o.mesh, *o.source);
  ParamMap out;
  for (const auto& p : o.plan->params) finish(o, *o.world, p, read[p.name], out);
  return out;
}

// 64-bit FNV-1a over the names, in order: two ranks that broadcast
// different tensors in the same number of calls disagree on it.
int64_t nameHash(const std::vector<std::string>& names) {
  uint64_t h = 1469598103934665603ull;
  for (const auto& n : names) {
    for (unsigned char c : n) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xffu) * 1099511628211ull;  // separator: ["ab","c"] != ["a","bc"]
  }
  return static_cast<int64_t>(h);
}

// One all_gather of (number of broadcasts, hash of their names): the last
// collective of rank0_broadcast. A rank that skipped or added a broadcast is
// out of step with the others here at the latest, and the communicator's
// fingerprint check reports it (CollectiveMismatch) instead of letting the
// next phase hang or start from wrong tensors.
void checkManifest(const LoadOptions& o, comm::Communicator& world, const std::vector<std::string>& names) {
  const auto dev = at::TensorOptions(at::kLong).device(world.device());
  at::Tensor mine = at::tensor({static_cast<int64_t>(names.size()), nameHash(names)}, dev).view({1, 2});
  at::Tensor gathered = at::empty({world.size(), 2}, dev);
  world.allGather(gathered, mine);
  const at::Tensor all = gathered.cpu();  // compared on the host
  for (int r = 1; r < world.size(); ++r)
    if (!at::equal(all[r], all[0]))
      fail("rank ", worldRank(o), ": rank0_broadcast manifests differ: group rank 0 broadcast ",
           all[0][0].item<int64_t>(), " tensors (name hash ", all[0][1].item<int64_t>(), "), group rank ", r, " ",
           all[r][0].item<int64_t>(), " (name hash ", all[r][1].item<int64_t>(), ")");
}

ParamMap loadRank0Broadcast(const LoadOptions& o) {
  comm::Communicator& world = *o.world;
  ParamMap out;
  std::vector<std::string> broadcastNames;
  for (const auto& p : o.plan->params) {
    checkGlobalShape(o, p);
    if (isEpSharded(p, o.mesh->shape())) {
      // Each ep rank owns different experts: read them per rank (the
      // shard-on-read path for this one parameter), never from rank 0.
      plan::AppliedPlan one;
      one.params = {p};
      finish(o, world, p, loadLocalParams(one, *o.mesh, *o.source)[p.name], out);
      continue;
    }
    // fp32 on the wire: the masters are fp32 and bf16 -> fp32 is exact, so
    // non-root ranks need neither the checkpoint's dtype nor its data. Read
    // on the host, moved once to the world's device for the broadcast.
    at::Tensor full = world.rank() == 0
                          ? o.source->read(p.name).to(at::kFloat).contiguous().to(world.device())
                          : at::empty(p.globalShape, at::TensorOptions(at::kFloat).device(world.device()));
    if (o.hooks.broadcast)
      o.hooks.broadcast(world, p, full);
    else
      world.broadcast(full, /*root=*/0);
    broadcastNames.push_back(p.name);
    auto placements = p.placements;
    if (auto f = mutants::points().loaderPlacements) f(p, placements);
    auto local = ref::DistTensor::distribute(full, *o.mesh, placements).local().contiguous();
    finish(o, world, p, local, out);
  }
  checkManifest(o, world, broadcastNames);
  return out;
}

// Calls fn(box, localStart) for every box of `layout`: one global range per
// dim (a combination of the dim's ranges) and where it starts in the local
// tensor. Ranges are in local order, so a range's local start is the sum of
// the lengths before it.
void forEachBox(const ref::LocalLayout& layout,
                const std::function<void(const std::vector<ref::IndexRange>&, const std::vector<int64_t>&)>& fn) {
  const size_t ndim = layout.globalShape.size();
  for (size_t d = 0; d < ndim; ++d)
    if (layout.ranges[d].empty()) return;  // empty piece: nothing to read
  std::vector<size_t> pick(ndim, 0);
  while (true) {
    std::vector<ref::IndexRange> box(ndim);
    std::vector<int64_t> start(ndim, 0);
    for (size_t d = 0; d < ndim; ++d) {
      box[d] = layout.ranges[d][pick[d]];
      for (size_t i = 0; i < pick[d]; ++i) start[d] += layout.ranges[d][i].length;
    }
    fn(box, start);
    size_t d = ndim;
    while (d > 0 && ++pick[d - 1] == layout.ranges[d - 1].size()) pick[--d] = 0;
    if (d == 0) return;
  }
}

ParamMap loadInitThenLoad(const LoadOptions& o) {
  const auto sizes = ref::meshSizes(*o.mesh);
  const auto coords = o.mesh->coords();
  // 1. Create every parameter empty with its local shape, as a model
  //    constructed on the meta device and moved with to_empty() is.
  std::vector<ref::LocalLayout> layouts;
  ParamMap empty;
  for (const auto& p : o.plan->params) {
    for (const auto& pl : p.placements)
      if (pl.isPartial())
        fail("rank ", worldRank(o), ": init_then_load cannot load parameter ", p.name, " with placements ",
             ref::toString(p.placements), " (a Partial parameter has no checkpoint slice)");
    layouts.push_back(ref::computeLayout(p.globalShape, p.placements, sizes, coords));
    const auto& shape = layouts.back().localShape;
    const auto f32 = at::TensorOptions(at::kFloat).device(o.world->device());  // created where they live
    empty.insert(p.name, o.hooks.emptyFill ? at::full(shape, *o.hooks.emptyFill, f32) : at::empty(shape, f32));
  }
  // 2. Fill each in place from the checkpoint, one box (StridedShard block)
  //    per read, and account for every element.
  ParamMap out;
  for (size_t i = 0; i < o.plan->params.size(); ++i) {
    const auto& p = o.plan->params[i];
    checkGlobalShape(o, p);
    at::Tensor local = empty[p.name];
    int64_t written = 0;
    forEachBox(layouts[i], [&](const std::vector<ref::IndexRange>& box, const std::vector<int64_t>& start) {
      if (o.hooks.copyBox && !o.hooks.copyBox(p, box)) return;
      std::vector<io::SliceRange> ranges;
      at::Tensor dst = local;
      for (size_t d = 0; d < box.size(); ++d) {
        ranges.push_back({box[d].start, box[d].length});
        dst = dst.narrow(static_cast<int64_t>(d), start[d], box[d].length);
      }
      dst.copy_(o.source->readSlice(p.name, ranges));  // copy_ converts the dtype
      written += dst.numel();
    });
    if (written != local.numel())
      fail("rank ", worldRank(o), ": init_then_load wrote ", written, " of ", local.numel(), " elements of ", p.name,
           " (", layouts[i].describe(), ")");
    finish(o, *o.world, p, local, out);
  }
  return out;
}

}  // namespace

// The built-in paths (their functions above), one registration line each.
MOE_REGISTER(Loader, FunctionLoader, "shard_on_read", loadShardOnRead);
MOE_REGISTER(Loader, FunctionLoader, "rank0_broadcast", loadRank0Broadcast);
MOE_REGISTER(Loader, FunctionLoader, "init_then_load", loadInitThenLoad);

std::vector<std::string> loadPathNames() { return Registry<Loader>::instance().names(); }

const char* loadPathName(const LoadPath& path) { return path.name.c_str(); }

LoadPath parseLoadPath(const std::string& name) {
  Registry<Loader>::instance().get(name);  // validates: "unknown loading path 'x' (known: ...)"
  return LoadPath{name};
}

bool isEpSharded(const ParamPlacement& param, const mesh::MeshShape& mesh) {
  const int ep = mesh.index("ep");
  return param.isExpert && ep >= 0 && param.placements.at(static_cast<size_t>(ep)).isSharded();
}

ParamMap loadParams(const LoadOptions& options) {
  if (!options.source || !options.mesh || !options.plan)
    fail("loadParams: source, mesh and plan are required (loading path ", loadPathName(options.path), ")");
  LoadOptions o = options;
  if (!o.world) o.world = o.mesh->world();
  if (o.world->size() != o.mesh->shape().worldSize())
    fail("loadParams: communicator '", o.world->name(), "' has ", o.world->size(), " ranks, the mesh ",
         o.mesh->shape().describe(), " spans ", o.mesh->shape().worldSize());
  return Registry<Loader>::instance().get(o.path.name).load(o);
}

}  // namespace moe::parallel
