#include "harness/checks/placement_check.h"

#include "common/registry.h"

#include <algorithm>
#include <map>
#include <sstream>

#include "harness/checks/check_common.h"
#include "common/error.h"
#include "reference/placement/dist_tensor.h"

namespace moe::checks {

namespace {

std::string hex(int64_t h) {
  std::ostringstream os;
  os << "0x" << std::hex << static_cast<uint64_t>(h);
  return os.str();
}

struct ShardingFacts {
  bool anyShard = false;         // some Shard/StridedShard placement
  bool shardsNontrivial = false;  // ... on a mesh dim of size > 1
};

ShardingFacts shardingFacts(const ParamShard& p, const std::vector<int>& sizes) {
  ShardingFacts f;
  for (size_t i = 0; i < p.placements.size(); ++i) {
    if (!p.placements[i].isSharded()) continue;
    f.anyShard = true;
    if (i < sizes.size() && sizes[i] > 1) f.shardsNontrivial = true;
  }
  return f;
}

int64_t product(const std::vector<int64_t>& v) {
  int64_t n = 1;
  for (int64_t x : v) n *= x;
  return n;
}

// The mesh dims a replicated parameter must be identical over.
std::vector<std::string> identityDims(const std::string& name, const PlacementCheckOptions& o,
                                      const mesh::MeshShape& shape) {
  for (const auto& rule : o.replicated)
    if (matchesPattern(rule.pattern, name) && !rule.dims.empty()) return rule.dims;
  std::vector<std::string> all;
  for (const auto& d : shape.dims()) all.push_back(d.name);
  return all;
}

// A StridedShard(d, s) parameter whose values are wrong: when they equal
// the plain Shard(d) slice of the checkpoint, the loader ignored the split
// factor (a fused gate/up tensor split as one block), and the message says
// so. Returns "" otherwise.
std::string stridedAsPlainHint(const io::TensorSource& checkpoint, const ParamShard& p,
                               const std::vector<int>& sizes, const std::vector<int>& coords,
                               const PlacementCheckOptions& options) {
  std::vector<ref::Placement> plain = p.placements;
  bool strided = false;
  for (auto& q : plain)
    if (q.kind == ref::PlacementKind::kStridedShard) {
      q = ref::Placement::shard(q.dim);
      strided = true;
    }
  if (!strided) return "";
  ref::LocalLayout layout = ref::computeLayout(p.globalShape, plain, sizes, coords);
  if (layout.localShape != p.local.sizes().vec()) return "";
  at::Tensor slice = readLocalSlice(checkpoint, p.name, layout).to(p.local.scalar_type());
  if (!compareValues(p.local, slice, layout, options.rtol, options.atol, "checkpoint").ok) return "";
  return moe::str("; the local values are the ", ref::toString(plain), " slice instead of the declared ",
                  ref::toString(p.placements), "'s (the split factor was ignored)");
}

}  // namespace

CheckResult checkPlacement(mesh::DeviceMesh& mesh, const std::vector<ParamShard>& shards,
                           const io::TensorSource* checkpoint, const PlacementCheckOptions& options) {
  comm::Communicator& world = *mesh.world();
  const int rank = world.globalRanks()[world.rank()];
  const std::vector<int> sizes = ref::meshSizes(mesh);
  const std::vector<int> coords = mesh.coords();
  if (options.compareValues && !checkpoint) moe::fail("placement check: compareValues needs a checkpoint");

  Failures fails;
  double maxDiff = 0;
  int sharded = 0;
  std::vector<const ParamShard*> replicated;
  for (const ParamShard& p : shards) {
    const std::string& name = p.name;
    const std::string declared = ref::toString(p.placements);
    const bool shardingStyle = p.shardedByStyle;
    ref::LocalLayout layout;
    try {
      layout = ref::computeLayout(p.globalShape, p.placements, sizes, coords);
    } catch (const HarnessError& e) {
      fails.add(moe::str("rank ", rank, ": ", name, ": placements ", declared, " on mesh ",
                         mesh.shape().describe(), ": ", e.what()));
      continue;
    }
    const std::vector<int64_t> localShape = p.local.sizes().vec();
    const int64_t globalNumel = product(p.globalShape);
    if (shardingStyle) {
      ++sharded;
      ShardingFacts f = shardingFacts(p, sizes);
      if (!f.anyShard || (f.shardsNontrivial && p.local.numel() == globalNumel && layout.numel() < globalNumel)) {
        // The style degraded to replicated: declared so, or the data is whole.
        fails.add(moe::str("rank ", rank, ": style ", p.style, " leaves ", name, " replicated: local shape ",
                           shapeString(localShape),
                           p.local.numel() == globalNumel ? " equals the global shape" : " of global shape ",
                           p.local.numel() == globalNumel ? std::string() : shapeString(p.globalShape),
                           " (placements ", declared, ")"));
        continue;
      }
      if (f.shardsNontrivial) {
        // Placements that split nothing on any rank are replication in disguise.
        bool splitsSomething = false;
        for (int r = 0; r < mesh.shape().worldSize() && !splitsSomething; ++r)
          splitsSomething = ref::computeLayout(p.globalShape, p.placements, sizes,
                                               mesh.shape().coordsOf(r)).numel() < globalNumel;
        if (!splitsSomething && globalNumel > 0) {
          fails.add(moe::str("rank ", rank, ": style ", p.style, " leaves ", name,
                             " replicated: placements ", declared, " give every rank the global shape ",
                             shapeString(p.globalShape)));
          continue;
        }
      }
    } else {
      bool allReplicate = std::all_of(p.placements.begin(), p.placements.end(),
                                      [](const ref::Placement& q) { return q.isReplicate(); });
      if (!allReplicate) {
        fails.add(moe::str("rank ", rank, ": ", name, " has no sharding style (style '", p.style,
                           "') but placements ", declared, "; expected Replicate() on every mesh dim"));
        continue;
      }
      replicated.push_back(&p);
    }
    if (std::any_of(p.placements.begin(), p.placements.end(),
                    [](const ref::Placement& q) { return q.isPartial(); })) {
      fails.add(moe::str("rank ", rank, ": ", name, " has a Partial placement ", declared,
                         "; a parameter must hold values, not pending sums"));
      continue;
    }
    if (localShape != layout.localShape) {
      fails.add(moe::str("rank ", rank, ": ", name, " local shape ", shapeString(localShape), " vs expected ",
                         shapeString(layout.localShape), " (placements ", declared, ", global ",
                         shapeString(p.globalShape), ")"));
      continue;
    }
    if (!options.compareValues) continue;
    if (!checkpoint->has(name)) {
      fails.add(moe::str("rank ", rank, ": ", name, " is not in the checkpoint ", checkpoint->where()));
      continue;
    }
    if (checkpoint->shape(name) != p.globalShape) {
      fails.add(moe::str("rank ", rank, ": ", name, " global shape ", shapeString(p.globalShape),
                         " vs checkpoint shape ", shapeString(checkpoint->shape(name))));
      continue;
    }
    // The checkpoint slice rounded to the parameter's dtype (a bf16 run keeps
    // bf16 copies of fp32 checkpoint values).
    at::Tensor expected = readLocalSlice(*checkpoint, name, layout).to(p.local.scalar_type());
    ValueComparison c = compareValues(p.local, expected, layout, options.rtol, options.atol, "checkpoint");
    maxDiff = std::max(maxDiff, c.maxAbsDiff);
    if (!c.ok)
      fails.add(moe::str("rank ", rank, ": ", name, " ", c.message,
                         stridedAsPlainHint(*checkpoint, p, sizes, coords, options)));
  }

  // Identity of replicated parameters: all-gather "name hash" lines.
  std::sort(replicated.begin(), replicated.end(),
            [](const ParamShard* a, const ParamShard* b) { return a->name < b->name; });
  std::ostringstream mine;
  for (const ParamShard* p : replicated) mine << p->name << ' ' << hashTensor(p->local) << '\n';
  std::vector<std::map<std::string, int64_t>> hashes;
  for (const std::string& s : allGatherStrings(world, mine.str())) {
    std::istringstream in(s);
    std::map<std::string, int64_t> m;
    std::string n;
    int64_t h;
    while (in >> n >> h) m[n] = h;
    hashes.push_back(std::move(m));
  }
  const mesh::MeshShape& shape = mesh.shape();
  for (const ParamShard* p : replicated) {
    std::vector<std::string> dims = identityDims(p->name, options, shape);
    std::vector<int> group = shape.groupRanks(rank, dims);
    std::map<int64_t, std::vector<int>> byHash;
    std::vector<int> missing;
    for (int r : group) {
      auto it = hashes[r].find(p->name);
      if (it == hashes[r].end()) missing.push_back(r);
      else byHash[it->second].push_back(r);
    }
    if (!missing.empty()) {
      fails.add(moe::str("rank ", rank, ": ", p->name, " is replicated here but ", formatRanks(missing),
                         " hold it sharded or not at all"));
    } else if (byHash.size() > 1) {
      std::ostringstream os;
      bool firstGroup = true;
      for (const auto& [h, ranks] : byHash) {
        os << (firstGroup ? "" : ", ") << formatRanks(ranks) << (ranks.size() > 1 ? " hold" : " holds")
           << " hash " << hex(h);
        firstGroup = false;
      }
      fails.add(moe::str("rank ", rank, ": ", p->name, " is not identical on the ranks that replicate it (over ",
                         shape.groupName(dims), "): ", os.str()));
    }
  }

  Verdict v = agreeVerdict(world, fails.first);
  maxDiff = allReduceMax(world, {maxDiff})[0];
  CheckResult r;
  r.check = "placement";
  r.passed = !v.failed;
  r.measured = {{"parameters", shards.size()},
                {"sharded", sharded},
                {"replicated", replicated.size()},
                {"max_abs_diff_vs_checkpoint", maxDiff},
                {"tolerance", {{"rtol", options.rtol}, {"atol", options.atol}}},
                {"failing_ranks", v.failingRanks}};
  if (v.failed) {
    r.explanation = v.explanation;
  } else {
    r.explanation = moe::str(shards.size(), " parameters on ", world.size(), " ranks: ", sharded,
                             " sharded as their styles say, ", replicated.size(),
                             " replicated and identical; values vs checkpoint max |diff| ", maxDiff);
  }
  return r;
}

CheckResult PlacementCheck::run(const CheckContext& ctx) const {
  return checkPlacement(require(ctx.mesh, "placement", "mesh"), require(ctx.params, "placement", "params"),
                        ctx.placement.compareValues ? &require(ctx.checkpoint, "placement", "checkpoint")
                                                    : ctx.checkpoint,
                        ctx.placement);
}

MOE_REGISTER(Check, PlacementCheck);

}  // namespace moe::checks
