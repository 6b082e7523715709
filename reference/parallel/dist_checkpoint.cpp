#include "reference/parallel/dist_checkpoint.h"

#include <set>

#include "common/error.h"
#include "reference/model/init.h"
#include "reference/mutants/mutation_points.h"
#include "reference/placement/dist_tensor.h"
#include "reference/placement/layout.h"

namespace moe::parallel {

std::vector<io::CheckpointPiece> ownedPieces(const ParamShard& shard, const std::string& savedName,
                                             const mesh::DeviceMesh& mesh) {
  // The writer's coordinate on every dim the placements do not shard: a
  // function of the saved name, the same on every rank, so the replicated
  // tensors (and zero3's gathered ones) are spread over their holders
  // instead of all landing on coordinate 0 (bench_checkpoint measured rank 0
  // writing all of a zero3 save and 60 % of an ep=4 one).
  const uint64_t h = ref::fnv1a64(savedName);
  const auto sizes = ref::meshSizes(mesh);
  const auto coords = mesh.coords();
  for (size_t d = 0; d < sizes.size(); ++d)
    if (!shard.placements[d].isSharded() && static_cast<uint64_t>(coords[d]) != (h + d) % static_cast<uint64_t>(sizes[d]))
      return {};
  const auto layout = ref::computeLayout(shard.globalShape, shard.placements, sizes, coords);
  MOE_ASSERT(shard.local.sizes().vec() == layout.localShape, savedName, " local shape ", shard.local.sizes(),
             " vs layout ", torch::IntArrayRef(layout.localShape));
  std::vector<io::CheckpointPiece> out;
  if (layout.numel() == 0) return out;
  const size_t nd = layout.globalShape.size();
  // Every combination of ranges (an odometer over dims), with each range's
  // offset inside the local tensor.
  std::vector<size_t> pick(nd, 0);
  while (true) {
    std::vector<int64_t> global(nd), local(nd), len(nd);
    for (size_t d = 0; d < nd; ++d) {
      const auto& rs = layout.ranges[d];
      int64_t before = 0;
      for (size_t i = 0; i < pick[d]; ++i) before += rs[i].length;
      global[d] = rs[pick[d]].start;
      local[d] = before;
      len[d] = rs[pick[d]].length;
    }
    at::Tensor v = shard.local;
    for (size_t d = 0; d < nd; ++d) v = v.narrow(static_cast<int64_t>(d), local[d], len[d]);
    if (auto f = mutants::points().savePieceOffsets) f(shard.isExpert, local, global);
    out.push_back({savedName, global, v.detach().to(at::kCPU).contiguous().clone()});
    size_t d = nd;
    while (d > 0 && ++pick[d - 1] == layout.ranges[d - 1].size()) pick[--d] = 0;
    if (d == 0) break;
  }
  return out;
}

void saveDistCheckpoint(const DistSaveOptions& o, mesh::DeviceMesh& mesh, const std::vector<ParamShard>& params,
                        const std::vector<ParamShard>& expAvg, const std::vector<ParamShard>& expAvgSq) {
  auto& world = *mesh.world();
  const int rank = world.rank();
  std::map<std::string, std::vector<int64_t>> shapes;
  std::vector<io::CheckpointPiece> pieces;
  auto add = [&](const std::vector<ParamShard>& shards, const std::string& prefix) {
    for (const auto& s : shards) {
      shapes[prefix + s.name] = s.globalShape;
      for (auto& p : ownedPieces(s, prefix + s.name, mesh)) pieces.push_back(std::move(p));
    }
  };
  add(params, "");
  add(expAvg, kExpAvgPrefix);
  add(expAvgSq, kExpAvgSqPrefix);
  const bool markerFirst = mutants::points().completeMarkerFirst && mutants::points().completeMarkerFirst();
  // Each phase ends with an agreement: a rank that failed makes every rank
  // fail with its message instead of leaving the others in a barrier.
  std::string error;
  auto agree = [&](const char* phase) {
    auto bad = torch::tensor({error.empty() ? 0.0 : 1.0}, torch::TensorOptions(torch::kDouble).device(world.device()));
    world.allReduce(bad, comm::ReduceOp::kSum);
    if (!error.empty()) fail("rank ", rank, ": saving ", o.dir, " (", phase, "): ", error);
    if (bad.item<double>() > 0) fail("rank ", rank, ": saving ", o.dir, " (", phase, "): another rank failed");
  };
  if (rank == 0) {
    try {
      io::writeIntent(o.dir, world.size(), o.step);
      if (markerFirst) io::writeCompleteMarker(o.dir);
    } catch (const HarnessError& e) {
      error = e.what();
    }
  }
  agree("intent");
  try {
    io::writeRankPieces(o.dir, rank, pieces);
  } catch (const HarnessError& e) {
    error = e.what();
  }
  agree("rank files");
  if (rank == 0) {
    try {
      io::finalizeDistCheckpoint(o.dir, world.size(), o.info, shapes);
    } catch (const HarnessError& e) {
      error = e.what();
    }
  }
  agree("metadata");
}

namespace {

ref::ParamMap readAll(const io::TensorSource& source, const plan::AppliedPlan& plan, mesh::DeviceMesh& mesh,
                      bool parameters) {
  ref::ParamMap out;
  const auto sizes = ref::meshSizes(mesh);
  const auto coords = mesh.coords();
  for (const auto& p : plan.params) {
    if (!source.has(p.name)) fail(source.where(), ": no tensor '", p.name, "' (the resuming plan needs it)");
    if (source.shape(p.name) != p.globalShape)
      fail(source.where(), ": tensor '", p.name, "' has shape ", torch::IntArrayRef(source.shape(p.name)),
           " in the checkpoint, ", torch::IntArrayRef(p.globalShape), " in this run");
    auto placements = p.placements;
    if (parameters) {
      if (auto f = mutants::points().resumePlacements) f(p, placements);
    } else if (mutants::points().momentsNotResharded && mutants::points().momentsNotResharded()) {
      // Rank 0's box of the local shape, wherever this rank's slice is.
      const auto layout = ref::computeLayout(p.globalShape, placements, sizes, coords);
      std::vector<io::SliceRange> box;
      for (auto n : layout.localShape) box.push_back({0, n});
      out.insert(p.name, source.readSlice(p.name, box).to(torch::kFloat).contiguous());
      continue;
    }
    auto dt = ref::DistTensor::distributeFromSource(p.name, source, mesh, placements);
    out.insert(p.name, dt.local().to(torch::kFloat).contiguous());
  }
  return out;
}

}  // namespace

ResumeState loadResumeState(const io::TensorSource& source, const nlohmann::json& info, const plan::AppliedPlan& plan,
                            mesh::DeviceMesh& mesh) {
  ResumeState s;
  if (!info.is_object() || !info.contains("step") || !info["step"].is_number_integer())
    fail(source.where(), ": the checkpoint's info has no integer \"step\"");
  s.step = info["step"].get<int64_t>();
  s.params = readAll(source, plan, mesh, /*parameters=*/true);
  io::PrefixView m(source, kExpAvgPrefix), v(source, kExpAvgSqPrefix);
  s.expAvg = readAll(m, plan, mesh, /*parameters=*/false);
  s.expAvgSq = readAll(v, plan, mesh, /*parameters=*/false);
  return s;
}

std::string configMismatch(const nlohmann::json& ck, const nlohmann::json& run) {
  std::string out;
  auto add = [&](const std::string& key, const std::string& a, const std::string& b) {
    out += (out.empty() ? "" : "; ") + str("config field '", key, "' is ", a, " in the checkpoint, ", b, " in this run");
  };
  std::set<std::string> keys;
  for (const auto& [k, v] : ck.items()) keys.insert(k);
  for (const auto& [k, v] : run.items()) keys.insert(k);
  for (const auto& k : keys) {
    const bool inCk = ck.contains(k), inRun = run.contains(k);
    if (inCk && inRun && ck[k] == run[k]) continue;
    add(k, inCk ? ck[k].dump() : "absent", inRun ? run[k].dump() : "absent");
  }
  return out;
}

}  // namespace moe::parallel
