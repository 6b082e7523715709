#include "harness/checks/partition_check.h"

#include "common/registry.h"

#include <algorithm>
#include <map>

#include "harness/checks/check_common.h"
#include "common/error.h"
#include "reference/placement/layout.h"

namespace moe::checks {

std::vector<std::string> expectedPartitionDims(const mesh::MeshShape& mesh, const ParamShard& param) {
  MOE_ASSERT_EQ(param.placements.size(), mesh.dims().size(), "placements vs mesh dims of ", param.name);
  std::vector<std::string> dims;
  for (size_t i = 0; i < param.placements.size(); ++i) {
    const auto& name = mesh.dims()[i].name;
    if (name != "tp" && !param.placements[i].isSharded()) dims.push_back(name);
  }
  return dims;
}

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : "+") + s;
  return out.empty() ? "(none)" : out;
}

// The first failure of one partition ("" = it matches), and its max |diff|.
struct PartitionResult {
  std::string failure;
  double maxAbsDiff = 0;
  int64_t padding = 0;
};

PartitionResult checkOne(const mesh::MeshShape& mesh, int rank, const std::map<std::string, const ParamShard*>& byName,
                         const FlatPartition& part, const io::TensorSource& source,
                         const PartitionCheckOptions& o) {
  PartitionResult res;
  const std::string where = moe::str("rank ", rank, ": flat group '", part.group, "'");
  if (part.params.empty()) {
    res.failure = where + " has no parameters";
    return res;
  }
  // The group every member prescribes (independent of what the wrapper says).
  std::vector<std::string> dims;
  for (size_t i = 0; i < part.params.size(); ++i) {
    const auto it = byName.find(part.params[i]);
    if (it == byName.end()) {
      res.failure = moe::str(where, ": member ", part.params[i], " is not a plan parameter");
      return res;
    }
    auto d = expectedPartitionDims(mesh, *it->second);
    if (i == 0) {
      dims = d;
    } else if (d != dims) {
      res.failure = moe::str(where, ": members ", part.params[0], " (partitioned over ", join(dims), ") and ",
                             part.params[i], " (over ", join(d), ") need different groups");
      return res;
    }
  }
  if (part.dims != dims) {
    res.failure = moe::str(where, ": partitioned over ", join(part.dims), ", its parameters' data-parallel group is ",
                           join(dims), " (", part.params[0], ")");
    return res;
  }
  const auto ranks = mesh.groupRanks(rank, dims);
  const int64_t n = static_cast<int64_t>(ranks.size());
  const int64_t r = std::find(ranks.begin(), ranks.end(), rank) - ranks.begin();

  // The plan-local slices of the source, flattened in the declared order.
  std::vector<int> sizes, coords = mesh.coordsOf(rank);
  for (const auto& d : mesh.dims()) sizes.push_back(d.size);
  std::vector<at::Tensor> flat;
  std::vector<int64_t> offsets;
  int64_t total = 0;
  for (const auto& name : part.params) {
    const ParamShard& p = *byName.at(name);
    auto layout = ref::computeLayout(p.globalShape, p.placements, sizes, coords);
    flat.push_back(readLocalSlice(source, name, layout).to(at::kDouble).reshape({-1}));
    offsets.push_back(total);
    total += flat.back().numel();
  }
  const int64_t per = (total + n - 1) / n;
  res.padding = per * n - total;
  if (!part.local.defined() || part.local.dim() != 1 || part.local.numel() != per) {
    res.failure = moe::str(where, ": partition shape ",
                           part.local.defined() ? shapeString(part.local.sizes()) : std::string("(none)"),
                           " vs expected [", per, "] (", total, " elements + ", res.padding, " padding over ", n,
                           " ranks of ", join(dims), ")");
    return res;
  }
  auto expected = at::cat(flat).to(at::kDouble);
  expected = at::cat({expected, at::zeros({res.padding}, expected.options())}).narrow(0, r * per, per);
  auto actual = part.local.detach().to(at::kDouble).cpu();
  auto diff = (actual - expected).abs();
  if (per > 0) res.maxAbsDiff = diff.max().item<double>();
  auto bad = diff.gt(o.atol + o.rtol * expected.abs()).logical_or(actual.isnan().logical_xor(expected.isnan()));
  const int64_t numBad = bad.sum().item<int64_t>();
  if (numBad == 0) return res;
  const int64_t i = bad.nonzero().select(1, 0)[0].item<int64_t>();
  const int64_t f = r * per + i;  // index in the padded flat buffer
  std::string what = "padding";
  for (size_t m = 0; m < part.params.size(); ++m)
    if (f >= offsets[m] && f < offsets[m] + flat[m].numel())
      what = moe::str(part.params[m], " local element ", f - offsets[m]);
  res.failure = moe::str(where, ": partition element ", i, " (flat ", f, ", ", what, ") = ",
                         actual[i].item<double>(), " vs ", source.where(), " ", expected[i].item<double>(), " (",
                         numBad, " of ", per, " elements differ, max |diff| ", res.maxAbsDiff, ")");
  return res;
}

}  // namespace

CheckResult checkFlatPartitions(const mesh::MeshShape& mesh, int rank, const std::vector<ParamShard>& plan,
                                const std::vector<FlatPartition>& partitions, const io::TensorSource& source,
                                const PartitionCheckOptions& options) {
  CheckResult out;
  out.check = "zero3_partition";
  std::map<std::string, const ParamShard*> byName;
  for (const auto& p : plan) byName[p.name] = &p;
  std::map<std::string, std::string> seenIn;  // parameter -> its flat group
  std::string first;
  int failures = 0;
  double maxDiff = 0;
  int64_t padding = 0;
  auto fail = [&](const std::string& m) {
    if (first.empty()) first = m;
    ++failures;
  };
  for (const auto& part : partitions) {
    for (const auto& name : part.params) {
      auto [it, fresh] = seenIn.emplace(name, part.group);
      if (!fresh)
        fail(moe::str("rank ", rank, ": ", name, " is in flat groups '", it->second, "' and '", part.group, "'"));
    }
    auto r = checkOne(mesh, rank, byName, part, source, options);
    if (!r.failure.empty()) fail(r.failure);
    maxDiff = std::max(maxDiff, r.maxAbsDiff);
    padding += r.padding;
  }
  for (const auto& p : plan)
    if (!seenIn.count(p.name)) fail(moe::str("rank ", rank, ": ", p.name, " is in no flat group"));
  out.passed = failures == 0;
  out.measured = {{"flat_groups", partitions.size()}, {"max_abs_diff", maxDiff}, {"padding_elements", padding},
                  {"failures", failures}};
  out.explanation = out.passed ? moe::str(partitions.size(), " flat partitions equal their slice of ", source.where())
                               : first + (failures > 1 ? moe::str(" (and ", failures - 1, " more)") : "");
  return out;
}

CheckResult checkFlatPartitionsCollective(mesh::DeviceMesh& mesh, const std::vector<ParamShard>& plan,
                                          const std::vector<FlatPartition>& partitions,
                                          const io::TensorSource& source, const PartitionCheckOptions& options) {
  auto& world = *mesh.world();
  auto local = checkFlatPartitions(mesh.shape(), world.rank(), plan, partitions, source, options);
  auto v = agreeVerdict(world, local.passed ? std::string() : local.explanation);
  auto maxima = allReduceMax(world, {local.measured["max_abs_diff"].get<double>()});
  CheckResult out = local;
  out.passed = !v.failed;
  out.measured["max_abs_diff"] = maxima[0];
  if (v.failed) {
    out.explanation = v.explanation;
    out.measured["failing_ranks"] = v.failingRanks;
  }
  return out;
}

bool FlatPartitionCheck::applies(const CheckContext& ctx) const {
  return ctx.flatPartitions != nullptr && !ctx.flatPartitions->empty();
}

CheckResult FlatPartitionCheck::run(const CheckContext& ctx) const {
  const char* kName = "zero3_partition";
  return checkFlatPartitionsCollective(require(ctx.mesh, kName, "mesh"), require(ctx.params, kName, "params"),
                                       require(ctx.flatPartitions, kName, "flat partitions"),
                                       require(ctx.checkpoint, kName, "checkpoint"));
}

MOE_REGISTER(Check, FlatPartitionCheck);

}  // namespace moe::checks
