#include "reference/parallel/stores/zero3_store.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "common/error.h"
#include "reference/mutants/mutation_points.h"
#include "reference/placement/layout.h"

namespace moe::parallel {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

const char* kZero3StoreName = "zero3";
// The checks' gathers (paramShards/gradShards): not part of a step's traffic.
const char* kCheckGroups = "zero3-check";

// One flat buffer: parameters of one unit that need the same reduction.
struct FlatGroup {
  std::string label;                  // "model.layers.1 [dp]"
  std::vector<size_t> members;        // plan.params indices, flat order
  std::vector<int64_t> offsets;       // member offsets in the flat buffer
  std::vector<std::vector<int64_t>> shapes;  // member plan-local shapes
  std::vector<std::string> dims;      // data-parallel dims it is partitioned over
  bool tpPartial = false;
  int size = 1, rank = 0;             // the partition group and this rank in it
  int64_t numel = 0, padded = 0, part = 0;
  bool countsInNorm = true;
  std::shared_ptr<comm::Communicator> comm;       // size > 1 only
  std::shared_ptr<comm::Communicator> checkComm;  // same ranks, for the checks' gathers
  std::shared_ptr<comm::Communicator> tp;         // tpPartial only
  torch::Tensor master;  // [part] fp32 leaf
  torch::Tensor grad;    // [part] fp32, after reduceGradients()
};

// The parameters gathered together: one transformer layer, or the rest.
struct Unit {
  std::string name;
  std::vector<FlatGroup*> groups;
  size_t numMembers = 0;
  torch::ScalarType dtype = torch::kFloat;  // gather dtype
  // This step's gathered buffers while members are still to be handed out:
  // flat[g] in dtype, flat32[g] its fp32 copy (bf16 only). [padded]
  std::vector<torch::Tensor> flat, flat32;
  std::set<size_t> handedOut;
};

torch::Tensor zerosPadded(const torch::Tensor& flat, int64_t padded) {
  if (flat.numel() == padded) return flat;
  return torch::cat({flat, torch::zeros({padded - flat.numel()}, flat.options())});
}

// The whole padded flat buffer of `g` from every member's partition.
// Collective over `comm` (skipped for a group of one). part: [g.part] -> [g.padded]
torch::Tensor gatherFlat(const FlatGroup& g, const torch::Tensor& part, comm::Communicator* comm,
                         torch::ScalarType dt) {
  auto in = part.detach().to(dt).contiguous();
  auto out = torch::empty({g.padded}, in.options());
  if (g.size > 1)
    comm->allGather(out, in);
  else
    out.copy_(in);
  return out;
}

// Gathers every flat group of a unit; backward reduce-scatters their fp32
// gradients into the owners' partitions. Inputs: the unit's partitions
// (masters), outputs: flat[g] in the unit's dtype, then (bf16) flat32[g].
struct GatherUnitFn : public torch::autograd::Function<GatherUnitFn> {
  static variable_list forward(AutogradContext* ctx, at::TensorList masters, int64_t unitHandle) {
    auto* unit = reinterpret_cast<Unit*>(static_cast<intptr_t>(unitHandle));
    ctx->saved_data["unit"] = unitHandle;
    MOE_ASSERT_EQ(masters.size(), unit->groups.size());
    variable_list out, wide;
    for (size_t i = 0; i < masters.size(); ++i) {
      const auto& g = *unit->groups[i];
      out.push_back(gatherFlat(g, masters[i], g.comm.get(), unit->dtype));
      if (unit->dtype != torch::kFloat) wide.push_back(out.back().to(torch::kFloat));
    }
    out.insert(out.end(), wide.begin(), wide.end());
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* unit = reinterpret_cast<Unit*>(static_cast<intptr_t>(ctx->saved_data["unit"].toInt()));
    const size_t n = unit->groups.size();
    variable_list out;
    for (size_t i = 0; i < n; ++i) {
      const auto& g = *unit->groups[i];
      // Gradients are reduced in fp32 (design: precision policies).
      auto full = grads[i].to(torch::kFloat);
      if (grads.size() > n) full = full + grads[n + i];
      full = full.contiguous();
      auto mine = torch::empty({g.part}, full.options());
      if (g.size > 1)
        g.comm->reduceScatter(mine, full, comm::ReduceOp::kSum);
      else
        mine.copy_(full);
      out.push_back(mine);
    }
    out.emplace_back();  // unitHandle
    return out;
  }
};

}  // namespace

struct Zero3Store::Impl {
  const plan::AppliedPlan& plan;
  const mesh::DeviceMesh& mesh;
  std::vector<std::unique_ptr<FlatGroup>> groups;  // construction order = communication order
  std::vector<std::unique_ptr<Unit>> units;
  // Per plan parameter: its group, its index among the group's members, its unit.
  std::vector<FlatGroup*> groupOf;
  std::vector<size_t> memberOf;
  std::vector<Unit*> unitOf;
  std::map<std::string, size_t> index;

  explicit Impl(const ParamStoreOptions& o) : plan(*o.plan), mesh(*o.mesh) {
    auto& mesh = *o.mesh;
    const auto& shape = mesh.shape();
    const size_t np = plan.params.size();
    groupOf.resize(np);
    memberOf.resize(np);
    unitOf.resize(np);
    // Key of a flat group within a unit: the reduction and the norm-counting rule.
    using Key = std::tuple<std::vector<std::string>, bool, std::vector<std::string>>;
    std::map<std::string, Unit*> unitByName;
    std::map<std::pair<Unit*, Key>, FlatGroup*> groupByKey;
    for (size_t i = 0; i < np; ++i) {
      const auto& pp = plan.params[i];
      index[pp.name] = i;
      const std::string unitName = gatherUnitOf(pp.name);
      Unit*& unit = unitByName[unitName];
      if (!unit) {
        units.push_back(std::make_unique<Unit>());
        unit = units.back().get();
        unit->name = unitName;
        unit->dtype = o.computeDtype;
      }
      const auto& red = o.reductions[i];
      // Replicas of this rank's elements outside the partition group (tp
      // for a tp-replicated parameter): counted once in the grad norm.
      std::vector<std::string> countOnce;
      for (int d = 0; d < mesh.ndim(); ++d) {
        const auto& dim = mesh.dims()[d].name;
        if (!pp.placements[d].isSharded() &&
            std::find(red.dataParallelDims.begin(), red.dataParallelDims.end(), dim) == red.dataParallelDims.end())
          countOnce.push_back(dim);
      }
      Key key{red.dataParallelDims, red.tpPartial, countOnce};
      FlatGroup*& g = groupByKey[{unit, key}];
      if (!g) {
        groups.push_back(std::make_unique<FlatGroup>());
        g = groups.back().get();
        g->dims = red.dataParallelDims;
        g->tpPartial = red.tpPartial;
        g->label = moe::str(unitName, " [", shape.groupName(g->dims), red.tpPartial ? ", tp-partial" : "", "]");
        g->countsInNorm = countsOnce(mesh, countOnce);
        unit->groups.push_back(g);
      }
      groupOf[i] = g;
      memberOf[i] = g->members.size();
      unitOf[i] = unit;
      ++unit->numMembers;
      g->members.push_back(i);
      const auto& t = ref::getParam(*o.local, pp.name);
      g->offsets.push_back(g->numel);
      g->shapes.push_back(t.sizes().vec());
      g->numel += t.numel();
    }
    // Communicators and partitions, in construction order on every rank
    // (creating a communicator is collective over the world).
    for (auto& gp : groups) {
      auto& g = *gp;
      g.size = 1;
      for (const auto& d : g.dims) g.size *= shape.size(d);
      g.padded = (g.numel + g.size - 1) / g.size * g.size;
      g.part = g.padded / g.size;
      if (g.size > 1) {
        // Store-owned groups (param_store.h): the recorder's "zero3:" counters
        // are this scheme's traffic alone; the checks' gathers run apart.
        g.comm = storeGroup(mesh, kZero3StoreName, g.dims);
        g.rank = g.comm->rank();
        g.checkComm = storeGroup(mesh, kCheckGroups, g.dims);
      }
      if (g.tpPartial) g.tp = storeGroup(mesh, kZero3StoreName, {"tp"});
      std::vector<torch::Tensor> pieces;
      for (size_t m : g.members)
        pieces.push_back(ref::getParam(*o.local, plan.params[m].name).detach().to(torch::kFloat).reshape({-1}));
      auto flat = zerosPadded(torch::cat(pieces), g.padded);
      g.master = flat.narrow(0, int64_t{g.rank} * g.part, g.part).clone().requires_grad_(true);
      if (auto f = mutants::points().zero3GroupInit) f(mesh, g.dims, g.master);
    }
  }


  void gather(Unit& u) {
    std::vector<torch::Tensor> ms;
    for (auto* g : u.groups) ms.push_back(g->master);
    auto out = GatherUnitFn::apply(at::TensorList(ms), static_cast<int64_t>(reinterpret_cast<intptr_t>(&u)));
    const size_t n = u.groups.size();
    u.flat.assign(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n));
    u.flat32.assign(out.begin() + static_cast<std::ptrdiff_t>(n), out.end());
    u.handedOut.clear();
  }

  // Plan-local tensors of every parameter from a flat buffer per group
  // (collective over the check communicators, in group order).
  std::vector<ParamShard> shards(bool gradients) const {
    std::vector<ParamShard> out(plan.params.size());
    for (const auto& gp : groups) {
      const auto& g = *gp;
      const auto& part = gradients ? g.grad : g.master;
      if (!part.defined()) {
        for (size_t m : g.members) out[m] = planShard(plan.params[m], torch::Tensor());
        continue;
      }
      auto flat = gatherFlat(g, part, g.checkComm.get(), torch::kFloat);
      for (size_t k = 0; k < g.members.size(); ++k)
        out[g.members[k]] = planShard(plan.params[g.members[k]], memberView(g, flat, k).clone());
    }
    return out;
  }

  // shards() of tensors laid out like the masters (one partition per flat
  // group, in group order), e.g. AdamW's moments.
  std::vector<ParamShard> shardsOf(const std::vector<torch::Tensor>& parts) const {
    MOE_ASSERT_EQ(parts.size(), groups.size());
    std::vector<ParamShard> out(plan.params.size());
    for (size_t i = 0; i < groups.size(); ++i) {
      const auto& g = *groups[i];
      auto flat = gatherFlat(g, parts[i].detach(), g.checkComm.get(), torch::kFloat);
      for (size_t k = 0; k < g.members.size(); ++k)
        out[g.members[k]] = planShard(plan.params[g.members[k]], memberView(g, flat, k).clone());
    }
    return out;
  }

  // Member k of `g` as a view of a flat buffer. flat: [g.padded] -> plan-local shape
  static torch::Tensor memberView(const FlatGroup& g, const torch::Tensor& flat, size_t k) {
    const auto& shape = g.shapes[k];
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return flat.narrow(0, g.offsets[k], n).view(shape);
  }
};

Zero3Store::Zero3Store(const ParamStoreOptions& options) : impl_(std::make_unique<Impl>(options)) {}
Zero3Store::~Zero3Store() = default;

void Zero3Store::beginStep() {
  for (auto& g : impl_->groups) g->master.mutable_grad() = torch::Tensor();
  for (auto& u : impl_->units) {
    u->flat.clear();
    u->flat32.clear();
    u->handedOut.clear();
  }
}

torch::Tensor Zero3Store::get(const std::string& name, torch::ScalarType dt) {
  auto it = impl_->index.find(name);
  if (it == impl_->index.end()) fail("zero3: no parameter ", name, " in the plan");
  const size_t i = it->second;
  Unit& u = *impl_->unitOf[i];
  // (Re-)gathered when the unit is not held; a second gather of the same
  // unit in one step is correct (its backward adds a second reduce-scatter
  // into the same partitions), only slower.
  if (u.flat.empty()) impl_->gather(u);
  const FlatGroup& g = *impl_->groupOf[i];
  const size_t gi = std::find(u.groups.begin(), u.groups.end(), &g) - u.groups.begin();
  const size_t k = impl_->memberOf[i];
  torch::Tensor t;
  if (dt == u.dtype)
    t = Impl::memberView(g, u.flat[gi], k);
  else if (dt == torch::kFloat)
    t = Impl::memberView(g, u.flat32[gi], k);  // an fp32 read under bf16: fp32 gradient
  else
    t = Impl::memberView(g, u.flat[gi], k).to(dt);
  u.handedOut.insert(i);
  if (u.handedOut.size() == u.numMembers) {  // release: see the header
    u.flat.clear();
    u.flat32.clear();
  }
  return t;
}

double Zero3Store::reduceGradients() {
  // The data-parallel sums happened in the backward (reduce-scatter); here
  // the tp sums of tp-partial groups, in group order on every rank.
  double sumSq = 0;
  const auto& mp = mutants::points();
  for (auto& gp : impl_->groups) {
    auto& g = *gp;
    auto grad = g.master.grad();
    grad = grad.defined() ? grad.detach().to(torch::kFloat).contiguous() : torch::zeros({g.part}, g.master.options().dtype(torch::kFloat));
    const bool tpSum = g.tpPartial && g.tp->size() > 1;
    if (tpSum) g.tp->allReduce(grad, comm::ReduceOp::kSum);
    g.grad = grad;
    // Each member's piece of this rank's partition (the elements of the
    // member in [rank*part, (rank+1)*part)): what the mutation points see
    // (mutation_points.h) and what the norm adds. Partitions are disjoint
    // over the group and padding is 0, so each element is counted once over
    // the group; replicas outside it (tp) are counted by their
    // coordinate-0 rank.
    const int64_t lo = int64_t{g.rank} * g.part, hi = lo + g.part;
    const int64_t groupSize = int64_t{g.size} * (tpSum ? g.tp->size() : 1);
    for (size_t k = 0; k < g.members.size(); ++k) {
      const auto& pp = impl_->plan.params[g.members[k]];
      int64_t n = 1;
      for (auto d : g.shapes[k]) n *= d;
      const int64_t from = std::max(lo, g.offsets[k]), to = std::min(hi, g.offsets[k] + n);
      if (from >= to) continue;
      auto piece = grad.narrow(0, from - lo, to - from);
      if (mp.reducedGrad) mp.reducedGrad(pp, impl_->mesh, groupSize, piece);
      bool counts = g.countsInNorm;
      if (mp.countsInNorm) mp.countsInNorm(pp, counts);
      if (counts) sumSq += piece.to(torch::kDouble).pow(2).sum().item<double>();
    }
  }
  return sumSq;
}

std::vector<CommExpectation> Zero3Store::expectedStepComm() const {
  // Per flat group of n > 1 ranks and step (see the header): one all-gather
  // of the padded buffer in the unit's gather dtype and one fp32
  // reduce-scatter of it; a tp-partial group also all-reduces its fp32
  // partition over tp. Ring bytes: (n-1)/n x the buffer, 2(t-1)/t for the
  // all-reduce.
  std::vector<CommExpectation> out;
  for (const auto& u : impl_->units)
    for (const FlatGroup* g : u->groups) {
      if (g->size > 1) {
        const int64_t n = g->size;
        const auto gatherBytes = g->padded * static_cast<int64_t>(c10::elementSize(u->dtype));
        addExpectedCall(out, *g->comm, comm::OpType::kAllGather, (n - 1) * gatherBytes / n);
        addExpectedCall(out, *g->comm, comm::OpType::kReduceScatter, (n - 1) * g->padded * 4 / n);
      }
      if (g->tpPartial && g->tp->size() > 1) {
        const int64_t t = g->tp->size();
        addExpectedCall(out, *g->tp, comm::OpType::kAllReduce, 2 * (t - 1) * g->part * 4 / t);
      }
    }
  // addExpectedCall keeps first-seen order; the recorder's counters are per
  // (group, op), so order does not matter to the check.
  return out;
}

std::vector<torch::Tensor> Zero3Store::masters() {
  std::vector<torch::Tensor> out;
  for (auto& g : impl_->groups) out.push_back(g->master);
  return out;
}

std::vector<torch::Tensor> Zero3Store::grads() {
  std::vector<torch::Tensor> out;
  for (auto& g : impl_->groups) out.push_back(g->grad);
  return out;
}

std::vector<ParamShard> Zero3Store::paramShards() const { return impl_->shards(false); }
std::vector<ParamShard> Zero3Store::gradShards() const { return impl_->shards(true); }
std::vector<ParamShard> Zero3Store::shardsOf(const std::vector<torch::Tensor>& likeMasters) const {
  return impl_->shardsOf(likeMasters);
}

namespace {
// fp32 masters, fp32 gradients and AdamW's two fp32 moments of `elements`.
StoreMemory fp32Memory(int64_t elements) {
  StoreMemory m;
  m.paramBytes = elements * 4;
  m.gradBytes = m.paramBytes;
  m.optimizerBytes = 2 * m.paramBytes;
  return m;
}
}  // namespace

StoreMemory Zero3Store::memory() const {
  int64_t n = 0, padding = 0;
  for (const auto& g : impl_->groups) {
    n += g->part;  // padding included: it is stored
    // This rank's partition [rank*part, (rank+1)*part) beyond the N real
    // elements (only the last ranks of a group hold padding).
    const int64_t lo = int64_t{g->rank} * g->part, hi = lo + g->part;
    padding += std::max<int64_t>(0, hi - std::max(lo, g->numel));
  }
  auto m = fp32Memory(n);
  m.paddingBytes = padding * 4;
  return m;
}

StoreMemory Zero3Store::replicatedMemory() const {
  int64_t n = 0;
  for (const auto& g : impl_->groups) n += g->numel;
  return fp32Memory(n);
}

std::vector<FlatPartition> Zero3Store::partitions(bool gradients) const {
  std::vector<FlatPartition> out;
  for (const auto& g : impl_->groups) {
    FlatPartition p;
    p.group = g->label;
    for (size_t m : g->members) p.params.push_back(impl_->plan.params[m].name);
    p.dims = g->dims;
    const auto& t = gradients ? g->grad : g->master;
    if (t.defined()) p.local = t.detach().clone();
    out.push_back(std::move(p));
  }
  return out;
}

std::unique_ptr<ParamStore> makeZero3Store(const ParamStoreOptions& options) {
  return std::make_unique<Zero3Store>(options);
}

MOE_REGISTER(StoreFactory, FunctionStoreFactory, "zero3", makeZero3Store);

}  // namespace moe::parallel
