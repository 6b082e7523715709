#include "harness/checks/expert_check.h"

#include "reference/io/nonfinite.h"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "harness/checks/check_common.h"
#include "common/error.h"
#include "common/registry.h"
#include "reference/placement/dist_tensor.h"

namespace moe::checks {

std::string describeCoverage(int64_t numExperts, const std::vector<std::vector<int64_t>>& expertsPerRank,
                             const std::vector<int>& ranks, const std::string& groupName) {
  MOE_ASSERT_EQ(expertsPerRank.size(), ranks.size());
  std::vector<std::vector<int>> holders(numExperts);
  std::vector<std::string> parts;
  for (size_t i = 0; i < ranks.size(); ++i) {
    std::vector<int64_t> outside;
    for (int64_t e : expertsPerRank[i]) {
      if (e < 0 || e >= numExperts) outside.push_back(e);
      else holders[e].push_back(ranks[i]);
    }
    if (!outside.empty())
      parts.push_back(moe::str("rank ", ranks[i], " holds ", formatCounted("expert", outside), " outside [0, ",
                               numExperts, ")"));
  }
  std::vector<int64_t> gaps;
  std::map<std::vector<int>, std::vector<int64_t>> overlaps;  // holder set -> experts
  for (int64_t e = 0; e < numExperts; ++e) {
    std::vector<int>& h = holders[e];
    std::sort(h.begin(), h.end());
    if (h.empty()) gaps.push_back(e);
    else if (h.size() > 1) overlaps[h].push_back(e);
  }
  if (!gaps.empty())
    parts.push_back(moe::str(formatCounted("expert", gaps), gaps.size() > 1 ? " are" : " is",
                             " held by no ", groupName, " rank"));
  for (const auto& [h, experts] : overlaps)
    parts.push_back(moe::str(formatCounted("expert", experts), experts.size() > 1 ? " are" : " is", " held by ",
                             formatRanks(h)));
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : "; ") + p;
  return out;
}

std::string describeDuplicateWeights(const std::vector<ExpertHashes>& ranks) {
  // (rank, expert) slots per weight hash.
  struct Slot {
    int rank;
    int64_t expert;
    int64_t expected;
    bool known;
  };
  std::map<int64_t, std::vector<Slot>> byHash;
  for (const auto& r : ranks)
    for (size_t i = 0; i < r.experts.size(); ++i)
      // Empty rows (an uneven split elsewhere) all hash alike and hold nothing.
      if (r.actual[i] != static_cast<int64_t>(kFnvOffset))
        byHash[r.actual[i]].push_back(
            {r.rank, r.experts[i], r.expected.empty() ? 0 : r.expected[i], !r.expected.empty()});
  // Per set of ranks sharing weights: each rank's experts in the shared groups.
  std::map<std::vector<int>, std::map<int, std::set<int64_t>>> clusters;
  for (const auto& [h, slots] : byHash) {
    std::set<int> rankSet;
    bool dup = false;
    for (size_t a = 0; a < slots.size(); ++a)
      for (size_t b = a + 1; b < slots.size(); ++b) {
        const Slot& x = slots[a];
        const Slot& y = slots[b];
        // The same weights are fine for the same expert (replicas) and for
        // experts the checkpoint itself makes identical.
        if (x.expert == y.expert) continue;
        if (x.known && y.known && x.expected == y.expected) continue;
        dup = true;
        rankSet.insert(x.rank);
        rankSet.insert(y.rank);
      }
    if (!dup) continue;
    std::vector<int> key(rankSet.begin(), rankSet.end());
    for (const Slot& s : slots)
      if (rankSet.count(s.rank)) clusters[key][s.rank].insert(s.expert);
  }
  if (clusters.empty()) return "";
  const auto& [rankSet, experts] = *clusters.begin();
  auto list = [](const std::set<int64_t>& s) { return std::vector<int64_t>(s.begin(), s.end()); };
  const auto& firstExperts = list(experts.begin()->second);
  std::ostringstream os;
  const int lowest = experts.begin()->first;
  if (rankSet.size() == 1) {
    os << "rank " << lowest << " holds identical weights for " << formatCounted("expert", firstExperts);
  } else {
    os << formatRanks(rankSet) << " hold identical weights for " << formatCounted("expert", firstExperts) << ":";
    bool first = true;
    for (const auto& [rank, ex] : experts) {
      if (rank == lowest) continue;
      os << (first ? " " : ", ") << "rank " << rank << "'s " << formatCounted("expert", list(ex));
      first = false;
    }
    os << " equal rank " << lowest << "'s "
       << formatCounted("expert", firstExperts);
  }
  if (clusters.size() > 1) os << " (and " << clusters.size() - 1 << " more such rank set(s))";
  return os.str();
}

namespace {

// The layout of one expert row `e` with every other dim as `layout` has it.
ref::LocalLayout expertRowLayout(const ref::LocalLayout& layout, int64_t e) {
  ref::LocalLayout row = layout;
  row.ranges[0] = {ref::IndexRange{e, 1}};
  row.localShape[0] = 1;
  row.offsets[0] = e;
  return row;
}

std::vector<int64_t> expertsFromLayout(const ref::LocalLayout& layout) {
  std::vector<int64_t> ids;
  if (layout.localShape.empty() || layout.localShape[0] == 0) return ids;
  for (const auto& r : layout.ranges[0])
    for (int64_t e = r.start; e < r.start + r.length; ++e) ids.push_back(e);
  return ids;
}

}  // namespace

CheckResult checkExpertUniqueness(mesh::DeviceMesh& mesh, const std::vector<ParamShard>& shards,
                                  const io::TensorSource* checkpoint, const ExpertCheckOptions& options) {
  comm::Communicator& world = *mesh.world();
  const int rank = world.globalRanks()[world.rank()];
  if (options.compareCheckpoint && !checkpoint)
    moe::fail("expert_uniqueness check: compareCheckpoint needs a checkpoint");
  std::shared_ptr<comm::Communicator> group = mesh.comm(options.coverDims);
  const std::vector<int> sizes = ref::meshSizes(mesh);
  const std::vector<int> coords = mesh.coords();

  std::vector<const ParamShard*> experts;
  for (const auto& p : shards)
    if (p.isExpert) experts.push_back(&p);
  std::sort(experts.begin(), experts.end(),
            [](const ParamShard* a, const ParamShard* b) { return a->name < b->name; });

  Failures groupFails, localFails;
  std::vector<ExpertHashes> mine(experts.size());
  std::vector<ref::LocalLayout> layouts(experts.size());
  // "name numExperts k  id actual expected ..." per expert tensor, one line each.
  std::ostringstream wire;
  for (size_t i = 0; i < experts.size(); ++i) {
    const ParamShard& p = *experts[i];
    ExpertHashes& h = mine[i];
    h.rank = rank;
    try {
      layouts[i] = ref::computeLayout(p.globalShape, p.placements, sizes, coords);
    } catch (const HarnessError& e) {
      localFails.add(moe::str("rank ", rank, ": ", p.name, ": placements ", ref::toString(p.placements), ": ",
                              e.what()));
    }
    const ref::LocalLayout& layout = layouts[i];
    if (!layout.localShape.empty()) {
      std::vector<int64_t> derived = expertsFromLayout(layout);
      h.experts = p.expertIds.empty() ? derived : p.expertIds;
      if (!p.expertIds.empty() && p.expertIds != derived)
        localFails.add(moe::str("rank ", rank, ": ", p.name, ": the model routes to ",
                                formatCounted("expert", p.expertIds), " but the placements ",
                                ref::toString(p.placements), " give ",
                                derived.empty() ? std::string("no experts") : formatCounted("expert", derived)));
      if (p.local.dim() == 0 || p.local.size(0) != static_cast<int64_t>(h.experts.size())) {
        localFails.add(moe::str("rank ", rank, ": ", p.name, " local shape ", shapeString(p.local.sizes()),
                                " holds ", p.local.dim() ? p.local.size(0) : 0, " experts vs expected ",
                                h.experts.size(), " (placements ", ref::toString(p.placements), ")"));
        h.experts.clear();
      }
    }
    // Hashes would call a NaN equal to the same NaN bits: non-finite expert
    // weights fail here, named, whatever the checkpoint holds.
    if (const io::NonFiniteScan bad = io::scanNonFinite(p.local); bad.found())
      localFails.add(moe::str("rank ", rank, ": ", p.name, " holds non-finite values (never equal to anything): local ",
                              io::describeNonFinite(bad)));
    for (size_t row = 0; row < h.experts.size(); ++row) {
      h.actual.push_back(hashTensor(p.local[row]));
      if (!options.compareCheckpoint) continue;
      int64_t e = h.experts[row];
      if (e < 0 || e >= p.globalShape[0]) {
        h.expected.push_back(0);
        continue;
      }
      at::Tensor want = readLocalSlice(*checkpoint, p.name, expertRowLayout(layout, e));
      h.expected.push_back(hashTensor(want.to(p.local.scalar_type())[0]));
    }
    wire << p.name << ' ' << (p.globalShape.empty() ? 0 : p.globalShape[0]) << ' ' << h.experts.size()
         << ' ' << h.expected.size();
    for (size_t row = 0; row < h.experts.size(); ++row) wire << ' ' << h.experts[row] << ' ' << h.actual[row];
    for (int64_t x : h.expected) wire << ' ' << x;
    wire << '\n';
  }

  // Group-level verdicts from every member's hash lists.
  std::vector<std::string> lines = allGatherStrings(*group, wire.str());
  std::map<std::string, std::vector<ExpertHashes>> byParam;
  std::map<std::string, int64_t> numExperts;
  for (size_t g = 0; g < lines.size(); ++g) {
    std::istringstream in(lines[g]);
    std::string name;
    int64_t e, k, nexp;
    while (in >> name >> e >> k >> nexp) {
      ExpertHashes h;
      h.rank = group->globalRanks()[g];
      h.experts.resize(k);
      h.actual.resize(k);
      h.expected.resize(nexp);
      for (int64_t j = 0; j < k; ++j) in >> h.experts[j] >> h.actual[j];
      for (int64_t j = 0; j < nexp; ++j) in >> h.expected[j];
      numExperts[name] = e;
      byParam[name].push_back(std::move(h));
    }
  }
  for (const ParamShard* p : experts) {
    auto& members = byParam[p->name];
    if (members.size() != lines.size()) {
      groupFails.add(moe::str("rank ", rank, ": ", p->name, " is an expert tensor here but not on every rank of ",
                              group->name()));
      continue;
    }
    std::vector<std::vector<int64_t>> sets;
    std::vector<int> ranks;
    for (const auto& m : members) {
      sets.push_back(m.experts);
      ranks.push_back(m.rank);
    }
    std::string cov = describeCoverage(numExperts[p->name], sets, ranks, group->name());
    if (!cov.empty())
      groupFails.add(moe::str("rank ", rank, ": ", p->name, ": ", cov));
    std::string dup = describeDuplicateWeights(members);
    if (!dup.empty()) groupFails.add(moe::str("rank ", rank, ": ", p->name, ": ", dup));
  }

  // This rank's experts against the checkpoint.
  int64_t mismatches = 0;
  for (size_t i = 0; i < experts.size(); ++i) {
    const ParamShard& p = *experts[i];
    const ExpertHashes& h = mine[i];
    for (size_t row = 0; row < h.expected.size(); ++row) {
      if (h.actual[row] == h.expected[row]) continue;
      ++mismatches;
      int64_t e = h.experts[row];
      std::string holds;
      if (options.identifyMisplaced) {
        for (int64_t other = 0; other < p.globalShape[0]; ++other) {
          if (other == e) continue;
          at::Tensor want = readLocalSlice(*checkpoint, p.name, expertRowLayout(layouts[i], other));
          if (hashTensor(want.to(p.local.scalar_type())[0]) == h.actual[row]) {
            holds = moe::str("; it holds checkpoint expert ", other);
            break;
          }
        }
      }
      localFails.add(moe::str("rank ", rank, ": ", p.name, " expert ", e, " (local row ", row,
                              ") differs from checkpoint expert ", e, holds));
    }
  }

  Verdict v = agreeVerdict(world, !groupFails.first.empty() ? groupFails.first : localFails.first);
  int64_t localCount = experts.empty() ? 0 : static_cast<int64_t>(mine[0].experts.size());
  CheckResult r;
  r.check = "expert_uniqueness";
  r.passed = !v.failed;
  r.measured = {{"expert_tensors", experts.size()},
                {"cover_group", group->name()},
                {"cover_group_size", group->size()},
                {"local_experts", localCount},
                {"checkpoint_mismatches_on_rank", mismatches},
                {"failing_ranks", v.failingRanks}};
  r.explanation = v.failed ? v.explanation
                           : moe::str(experts.size(), " expert tensors: the ", group->size(), " ranks of ",
                                      group->name(), " hold disjoint expert sets covering all experts, "
                                      "each equal to its checkpoint expert");
  return r;
}

std::vector<std::string> expertCoverDims(const std::vector<ParamShard>& shards, const mesh::DeviceMesh& mesh) {
  std::vector<std::string> dims;
  for (int d = 0; d < mesh.ndim(); ++d)
    for (const auto& s : shards) {
      if (!s.isExpert || mesh.dims()[d].size <= 1 || !s.placements[d].isSharded()) continue;
      if (s.placements[d].normalized(static_cast<int64_t>(s.globalShape.size())).dim != 0) continue;
      dims.push_back(mesh.dims()[d].name);
      break;
    }
  if (dims.empty()) dims.push_back("ep");
  return dims;
}

CheckResult ExpertUniquenessCheck::run(const CheckContext& ctx) const {
  mesh::DeviceMesh& mesh = require(ctx.mesh, "expert_uniqueness", "mesh");
  const auto& params = require(ctx.params, "expert_uniqueness", "params");
  ExpertCheckOptions o = ctx.expert;
  if (o.coverDims.empty()) o.coverDims = expertCoverDims(params, mesh);
  return checkExpertUniqueness(mesh, params,
                               o.compareCheckpoint ? &require(ctx.checkpoint, "expert_uniqueness", "checkpoint")
                                                   : ctx.checkpoint,
                               o);
}

MOE_REGISTER(Check, ExpertUniquenessCheck);

}  // namespace moe::checks
