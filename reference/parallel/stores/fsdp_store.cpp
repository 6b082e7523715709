// "fsdp": FSDP2-style fully sharded data parallelism behind the ParamStore
// seam (param_store.h).
//
// Storage. Each parameter's PLAN-LOCAL tensor (what the TP/EP placements give
// the rank) is Shard(0) over its FSDP group: the mesh dims of size > 1 in
// GradReduction::dataParallelDims (dense parameters: every data-parallel dim,
// ep included, since ep ranks see different batch rows; ep-sharded experts:
// their expert-data-parallel dims, never ep itself) that the plan leaves
// replicated (all of them: GradReduction never lists a dim the plan shards;
// the mutation point fsdpGroupDims may). Several FSDP dims
// compose like DTensor placements in mesh order (torch.chunk of torch.chunk),
// so uneven sizes give torch.chunk pieces per dim (5 rows over dp=2 x ep=2:
// 2, 1, 1, 1) and the checks can verify the storage with computeLayout().
// When a plan dim that shards dim 0 FOLLOWS an FSDP dim in mesh order (mesh
// {"dp":2,"ep":2}, experts Shard(0)@ep, FSDP over dp), the FSDP dim splits
// every piece of those later dims: that is DTensor's _StridedShard, written
// StridedShard(0, S) with S the product of the later dims' sizes (the plan
// styles guarantee those pieces are equal, as StridedShard requires). The
// constructor re-derives every group member's rows from the placements and
// fails if they are not consecutive row blocks of the plan-local tensor in
// group-rank order, so the collectives and the placements cannot disagree.
// ParamStoreOptions::expertSharding == "none" leaves ep-sharded experts as the
// plan placed them (replicated over their expert-data-parallel dims, gradient
// all-reduced as in the "none" store).
//
// Collectives (all on store-owned groups "fsdp:<dims>", see param_store.h):
//  - get(name, dt): a differentiable all-gather (UnitGatherFn), coalesced as
//    FSDP2 gathers a fully_shard unit: the first get() of any member of a
//    gather unit (gatherUnitOf: a transformer layer, or the rest) gathers
//    every sharded member of the unit on that FSDP group in ONE all-gather.
//    Forward casts the fp32 shards to the GATHER dtype, each padded to its
//    largest piece so the collective is even (NCCL's contract); the padding
//    is dropped after the gather and each result is cast to dt. The
//    gather dtype is the run's compute dtype when that is narrower than fp32
//    (mixed precision, "bf16 parameters": half the gather volume), else fp32
//    (or dt, if the caller asks for something narrower still). The trainer
//    asks for fp32 and rounds every weight to the compute dtype itself
//    (dist_model.cpp w(), norm weights in rmsNorm), so a bf16 gather widened
//    to fp32 computes with the same values as an fp32 gather, and the
//    straight-through gradient still arrives in fp32. The trainer fetches
//    each (name, dt) once per step and the autograd graph keeps the gathered
//    tensor until backward: reshard_after_forward=False semantics (one
//    all-gather per unit, group and dtype per step, none in backward).
//  - Backward of the gather hands the gradient, cast to fp32, to the store
//    ("bf16 parameters, fp32 reduce"); reduceGradients() then reduce-scatters
//    it in fp32, coalesced as FSDP2 reduces a fully_shard unit: ONE
//    reduce-scatter per unit (a transformer layer, or the rest: gatherUnitOf)
//    and FSDP group, whose buffer holds, for each group rank in turn, that
//    rank's padded block of every member in plan order (FSDP2's
//    reduce-scatter input layout), and releases the full-size gradients, so
//    between steps the store holds only sharded state. Buckets are issued in
//    the plan order of their first member on every rank (stepBuckets()). Doing the reduce-scatter in this
//    post-backward stage (as FSDP2's final backward callback does for
//    parameters whose hook did not fire) instead of inside the autograd
//    backward keeps the collective order independent of autograd scheduling
//    and never hangs when a rank's gathered tensor receives no gradient (e.g.
//    loop experts with no tokens).
//  - Reduction dims the store does not shard over (tp for tpPartial
//    parameters): the reduced shards of a unit are all-reduced over them
//    (fp32) as one flattened buffer per unit and group; parameters the store
//    does not shard (an FSDP group of one) are all-reduced the same way,
//    one call per unit and reduction group (DDP-like buckets per unit).
//
// Optimizer and norm: AdamW steps on the fp32 shards (masters()/grads()).
// Each element's square is counted once over the world: shards are disjoint
// over the FSDP group, replicas over the remaining dims are counted by their
// coordinate-0 rank (countsOnce on the dims the final placements leave
// unsharded).
#include <algorithm>
#include <map>
#include <memory>

#include "common/error.h"
#include "reference/mutants/mutation_points.h"
#include "reference/parallel/param_store.h"
#include "reference/placement/dist_tensor.h"
#include "reference/placement/layout.h"

namespace moe::parallel {
namespace {

using ref::Placement;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

const char* kFsdpStoreName = "fsdp";

// One parameter as the store holds it.
struct Entry {
  const plan::ParamPlacement* pp = nullptr;
  std::vector<int64_t> planLocalShape;  // the plan-local tensor's shape
  std::vector<Placement> placements;    // plan placements + the FSDP split
  std::string style;                    // what the checks see
  bool sharded = false;                 // FSDP group of size > 1
  bool tpPartial = false;
  std::shared_ptr<comm::Communicator> shardGroup;   // sharded: the FSDP group
  std::shared_ptr<comm::Communicator> reduceGroup;  // replicated: the all-reduce group
  // sharded: the reduction dims outside the FSDP group (tp when tpPartial),
  // over which the reduce-scattered shard is all-reduced.
  std::shared_ptr<comm::Communicator> restGroup;
  std::vector<int64_t> pieces;  // plan-local rows held by each FSDP group rank
  int64_t offset = 0;           // first plan-local row of this rank's piece
  int64_t maxPiece = 0;         // padded piece rows (the collectives' block)
  int64_t rowNumel = 1;         // elements per dim-0 row
  bool countsInNorm = false;

  torch::Tensor master;   // fp32 [pieces[me], ...] (replicated: plan-local), requires grad
  torch::Tensor grad;     // fp32, master's shape, after reduceGradients()
  // sharded: fp32 plan-local gradient from backward(s); released once
  // reduceGradients() has reduce-scattered it.
  torch::Tensor pending;
  // sharded, during reduceGradients(): this rank's reduced padded block
  // [maxPiece, ...] (a view into its unit's reduce-scatter output).
  torch::Tensor block;
  std::vector<torch::ScalarType> fetched;  // gather dtypes of this step's all-gathers, in order

  int me() const { return shardGroup->rank(); }
  int64_t n() const { return shardGroup->size(); }

  // Padded block shape [rows, rest...].
  std::vector<int64_t> blockShape(int64_t rows) const {
    auto s = planLocalShape;
    s[0] = rows;
    return s;
  }

  int64_t blockNumel() const { return maxPiece * rowNumel; }

  // Copies group rank i's rows of `full` (fp32 plan-local gradient) into
  // dst [blockNumel()], zero-padded: rank i's block of the reduce-scatter.
  void packBlock(const torch::Tensor& full, int64_t i, torch::Tensor dst) const {
    int64_t off = 0;
    for (int64_t j = 0; j < i; ++j) off += pieces[j];
    dst.narrow(0, 0, pieces[i] * rowNumel).copy_(full.narrow(0, off, pieces[i]).reshape({-1}));
  }
};

// One coalesced reduction of a step: every member's buffer flattened and
// concatenated in plan order. kReduceScatter: the FSDP group's sharded
// members (the buffer is group-size blocks of `numel`); kAllReduce: the
// members the store does not shard (their whole gradients), or, kRest, the
// reduced blocks of sharded members over their remaining reduction dims.
struct Bucket {
  enum Kind { kReduceScatter, kAllReduce, kRest } kind;
  comm::Communicator* group = nullptr;
  std::vector<Entry*> members;
  int64_t numel = 0;  // elements per rank block (kReduceScatter) or of the buffer
};

// One coalesced all-gather: the sharded members of a gather unit (a
// transformer layer, or the rest: gatherUnitOf) on one FSDP group, in one
// gather dtype, handed out in one compute dtype. Each rank contributes the
// concatenation of its padded pieces of every member (plan order), so the
// gathered buffer holds, per group rank, that rank's block of every member:
// FSDP2's all-gather layout for a fully_shard unit.
struct UnitGather {
  std::vector<Entry*> members;  // plan order
  comm::Communicator* group = nullptr;
  int64_t blockNumel = 0;  // elements per rank block: sum of the members' padded pieces
  torch::ScalarType gatherDtype = torch::kFloat, dtype = torch::kFloat;
  bool gathered = false;               // this step (reset by beginStep)
  // This step's plan-local tensors (dtype), by member, until the gradients
  // are reduced (autograd keeps what the backward needs; held longer they
  // would be full-size parameters between steps).
  std::vector<torch::Tensor> outputs;
};

// Forward: the members' fp32 shards -> one all-gather in the gather dtype ->
// each member's plan-local tensor in the unit's dtype (a cast, widening when
// the gather was narrower). Backward: each member's fp32 gradient goes to
// its pending buffer (reduced after backward, see the file comment); the
// shards themselves receive no autograd gradient. A member the step does not
// use gets no gradient (undefined: nothing pending, it reduces zeros).
struct UnitGatherFn : public torch::autograd::Function<UnitGatherFn> {
  static tensor_list forward(AutogradContext* ctx, at::TensorList shards, int64_t handle) {
    ctx->saved_data["u"] = handle;
    auto& u = *reinterpret_cast<UnitGather*>(static_cast<intptr_t>(handle));
    MOE_ASSERT_EQ(shards.size(), u.members.size());
    const auto opts = torch::TensorOptions().dtype(u.gatherDtype);
    auto in = torch::zeros({u.blockNumel}, opts);
    int64_t off = 0;
    for (size_t k = 0; k < u.members.size(); ++k) {
      const Entry& e = *u.members[k];
      in.narrow(0, off, e.pieces[e.me()] * e.rowNumel).copy_(shards[k].detach().reshape({-1}));
      off += e.blockNumel();
    }
    const int64_t n = u.group->size();
    auto out = torch::empty({n * u.blockNumel}, opts);
    u.group->allGather(out, in);
    tensor_list result;
    off = 0;
    for (Entry* e : u.members) {
      std::vector<torch::Tensor> parts;
      for (int64_t i = 0; i < n; ++i) parts.push_back(out.narrow(0, i * u.blockNumel + off, e->pieces[i] * e->rowNumel));
      result.push_back(torch::cat(parts, 0).view(e->planLocalShape).to(u.dtype));
      off += e->blockNumel();
    }
    return result;
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto& u = *reinterpret_cast<UnitGather*>(static_cast<intptr_t>(ctx->saved_data["u"].toInt()));
    for (size_t k = 0; k < u.members.size(); ++k) {
      if (!grads[k].defined()) continue;
      Entry& e = *u.members[k];
      auto g = grads[k].to(torch::kFloat);
      if (e.pending.defined()) e.pending.add_(g);
      else e.pending = g.contiguous().clone();
    }
    return tensor_list(u.members.size() + 1);  // no gradient for the shards or the handle
  }
};

std::vector<int64_t> expandRows(const std::vector<ref::IndexRange>& ranges) {
  std::vector<int64_t> rows;
  for (const auto& r : ranges)
    for (int64_t i = r.start; i < r.start + r.length; ++i) rows.push_back(i);
  return rows;
}

class FsdpStore : public ParamStore {
 public:
  explicit FsdpStore(const ParamStoreOptions& o)
      : plan_(*o.plan),
        mesh_(*o.mesh),
        gatherDtype_(c10::elementSize(o.computeDtype) < c10::elementSize(torch::kFloat) ? o.computeDtype
                                                                                          : torch::kFloat) {
    if (o.expertSharding != "edp" && o.expertSharding != "none")
      fail("fsdp: expert sharding must be 'edp' or 'none', got '", o.expertSharding, "'");
    auto& mesh = *o.mesh;
    for (size_t i = 0; i < plan_.params.size(); ++i) {
      auto e = std::make_unique<Entry>();
      build(*e, plan_.params[i], o.reductions[i], mesh, o);
      index_[e->pp->name] = entries_.size();
      entries_.push_back(std::move(e));
    }
  }

  std::string name() const override { return kFsdpStoreName; }
  // The param_store.h hook: every parameter sharded beyond the plan is
  // gathered whole once per step on the store's own groups.
  std::string parameterGatherPrefix() const override { return std::string(kFsdpStoreName) + ":"; }

  void beginStep() override {
    for (auto& e : entries_) {
      e->master.mutable_grad() = torch::Tensor();
      e->pending = torch::Tensor();
      e->fetched.clear();
    }
    for (auto& [key, u] : gathers_) {
      u->outputs.clear();
      u->gathered = false;
    }
  }

  torch::Tensor get(const std::string& name, torch::ScalarType dt) override {
    auto it = index_.find(name);
    if (it == index_.end()) fail("fsdp: no parameter ", name, " in the plan");
    Entry& e = *entries_[it->second];
    if (!e.sharded) return e.master.to(dt);
    // Never gather wider than the caller's dtype (see the file comment).
    const auto gd = c10::elementSize(dt) < c10::elementSize(gatherDtype_) ? dt : gatherDtype_;
    UnitGather& u = unitGather(e, gd, dt);
    if (!u.gathered) {
      // The unit's first use this step gathers every member (the trainer's
      // forward order is the same on every rank, so is this call).
      std::vector<torch::Tensor> shards;
      for (Entry* m : u.members) {
        m->fetched.push_back(gd);
        shards.push_back(m->master);
      }
      u.outputs = UnitGatherFn::apply(at::TensorList(shards), static_cast<int64_t>(reinterpret_cast<intptr_t>(&u)));
      u.gathered = true;
    }
    const auto k = std::find(u.members.begin(), u.members.end(), &e) - u.members.begin();
    return u.outputs[static_cast<size_t>(k)];
  }

  double reduceGradients() override {
    for (auto& [key, u] : gathers_) u->outputs.clear();  // the backward is done with them
    for (const Bucket& b : stepBuckets()) {
      const int64_t n = b.group->size();
      if (b.kind == Bucket::kReduceScatter) {
        auto in = torch::zeros({n * b.numel}, torch::kFloat);
        for (int64_t i = 0; i < n; ++i) {
          int64_t off = i * b.numel;
          for (Entry* e : b.members) {
            // An entry fetched by the forward but given no gradient (loop
            // experts with no tokens) reduces zeros.
            if (e->pending.defined()) e->packBlock(e->pending, i, in.narrow(0, off, e->blockNumel()));
            off += e->blockNumel();
          }
        }
        auto out = torch::empty({b.numel}, torch::kFloat);
        b.group->reduceScatter(out, in, comm::ReduceOp::kSum);
        int64_t off = 0;
        for (Entry* e : b.members) {
          e->block = out.narrow(0, off, e->blockNumel()).view(e->blockShape(e->maxPiece));
          e->pending = torch::Tensor();  // reduce-scattered: only the shard's gradient lives on (memory())
          off += e->blockNumel();
        }
        continue;
      }
      std::vector<torch::Tensor> flat;
      for (Entry* e : b.members) {
        if (b.kind == Bucket::kAllReduce) {
          auto g = e->master.grad();
          e->grad = g.defined() ? g.detach().to(torch::kFloat).contiguous() : torch::zeros_like(e->master).detach();
          flat.push_back(e->grad.reshape({-1}));
        } else {
          flat.push_back(e->block.reshape({-1}));
        }
      }
      // Flattened, reduced, copied back: the buffer lives only here.
      auto buffer = torch::cat(flat);
      b.group->allReduce(buffer, comm::ReduceOp::kSum);
      int64_t off = 0;
      for (auto& f : flat) {
        f.copy_(buffer.narrow(0, off, f.numel()));
        off += f.numel();
      }
    }
    double sumSq = 0;
    const auto& mp = mutants::points();
    for (auto& ep : entries_) {
      Entry& e = *ep;
      int64_t groupSize = 1;  // ranks the gradient was summed over
      if (e.sharded) {
        // Not used this step on any rank (the trainer's fetches are the same
        // everywhere): nothing was reduced, the gradient is 0.
        if (e.fetched.empty()) e.block = torch::zeros(e.blockShape(e.maxPiece), torch::kFloat);
        e.pending = torch::Tensor();
        e.grad = e.block.narrow(0, 0, e.pieces[e.me()]).contiguous();
        e.block = torch::Tensor();
        groupSize = e.n() * e.restGroup->size();
      } else {
        if (e.reduceGroup->size() <= 1) {  // no bucket: its own gradient
          auto g = e.master.grad();
          e.grad = g.defined() ? g.detach().to(torch::kFloat).contiguous() : torch::zeros_like(e.master).detach();
        }
        groupSize = e.reduceGroup->size();
      }
      // Mutation points (mutation_points.h), as in every store: grad is this
      // rank's shard (sharded) or plan-local tensor, fully reduced.
      if (mp.reducedGrad) mp.reducedGrad(*e.pp, mesh_, groupSize, e.grad);
      bool counts = e.countsInNorm;
      if (mp.countsInNorm) mp.countsInNorm(*e.pp, counts);
      if (counts) sumSq += e.grad.to(torch::kDouble).pow(2).sum().item<double>();
    }
    return sumSq;
  }

  std::vector<torch::Tensor> masters() override {
    std::vector<torch::Tensor> out;
    for (auto& e : entries_) out.push_back(e->master);
    return out;
  }
  std::vector<torch::Tensor> grads() override {
    std::vector<torch::Tensor> out;
    for (auto& e : entries_) out.push_back(e->grad.defined() ? e->grad : torch::zeros_like(e->master).detach());
    return out;
  }

  std::vector<ParamShard> paramShards() const override { return shards(false); }
  std::vector<ParamShard> gradShards() const override { return shards(true); }
  // masters() are the shards paramShards() describes, one to one.
  std::vector<ParamShard> shardsOf(const std::vector<torch::Tensor>& likeMasters) const override {
    MOE_ASSERT_EQ(likeMasters.size(), entries_.size());
    auto out = shards(false);
    for (size_t i = 0; i < out.size(); ++i) out[i].local = likeMasters[i].detach();
    return out;
  }

  StoreMemory memory() const override {
    StoreMemory m;
    for (const auto& e : entries_) {
      m.paramBytes += e->master.numel() * static_cast<int64_t>(e->master.element_size());
      if (e->grad.defined()) m.gradBytes += e->grad.numel() * static_cast<int64_t>(e->grad.element_size());
      // A full-size gradient still held would be gradient memory too (it is
      // released after the reduce-scatter; the memory check would see it).
      if (e->pending.defined()) m.gradBytes += e->pending.numel() * static_cast<int64_t>(e->pending.element_size());
    }
    m.optimizerBytes = 2 * m.paramBytes;  // AdamW exp_avg + exp_avg_sq, shaped like the masters
    return m;
  }

  std::vector<CommExpectation> expectedStepComm() const override {
    std::vector<CommExpectation> out;
    for (const auto& [key, u] : gathers_)  // one all-gather of n unit blocks per unit gathered this step
      if (u->gathered)
        addExpectedCall(out, *u->group, comm::OpType::kAllGather,
                        (u->group->size() - 1) * u->blockNumel *
                            static_cast<int64_t>(c10::elementSize(u->gatherDtype)));
    for (const Bucket& b : stepBuckets()) {
      const int64_t n = b.group->size();
      if (b.kind == Bucket::kReduceScatter)
        addExpectedCall(out, *b.group, comm::OpType::kReduceScatter, (n - 1) * b.numel * 4);
      else
        addExpectedCall(out, *b.group, comm::OpType::kAllReduce, 2 * (n - 1) * b.numel * 4 / n);
    }
    return out;
  }

 private:
  // The unit gather of `e` in (gather dtype, dtype), created on first use:
  // every sharded entry of e's unit on e's FSDP group, in plan order.
  UnitGather& unitGather(const Entry& e, torch::ScalarType gd, torch::ScalarType dt) {
    const std::string unit = gatherUnitOf(e.pp->name);
    const std::string key = moe::str(unit, '|', e.shardGroup->name(), '|', static_cast<int>(gd), '|',
                                     static_cast<int>(dt));
    auto& slot = gathers_[key];
    if (!slot) {
      slot = std::make_unique<UnitGather>();
      slot->group = e.shardGroup.get();
      slot->gatherDtype = gd;
      slot->dtype = dt;
      for (const auto& ep : entries_)
        if (ep->sharded && ep->shardGroup.get() == e.shardGroup.get() && gatherUnitOf(ep->pp->name) == unit) {
          slot->members.push_back(ep.get());
          slot->blockNumel += ep->blockNumel();
        }
    }
    return *slot;
  }

  // This step's coalesced reductions, in the order every rank issues them:
  // reduce-scatters and all-reduces of unsharded members by (unit, group) in
  // the plan order of their first member, then the kRest all-reduces the
  // same way (they read the reduce-scattered blocks). Only groups of more
  // than one rank; only sharded members the forward fetched (the same on
  // every rank).
  std::vector<Bucket> stepBuckets() const {
    std::vector<Bucket> out;
    std::map<std::string, size_t> open;
    auto add = [&](Bucket::Kind kind, comm::Communicator& g, Entry* e, int64_t numel) {
      if (g.size() <= 1) return;
      const std::string key = moe::str(static_cast<int>(kind), '|', g.name(), '|', gatherUnitOf(e->pp->name));
      auto it = open.find(key);
      if (it == open.end()) {
        out.push_back({kind, &g, {}, 0});
        it = open.emplace(key, out.size() - 1).first;
      }
      out[it->second].members.push_back(e);
      out[it->second].numel += numel;
    };
    for (const auto& ep : entries_) {
      Entry* e = ep.get();
      if (!e->sharded) add(Bucket::kAllReduce, *e->reduceGroup, e, e->master.numel());
      else if (!e->fetched.empty()) add(Bucket::kReduceScatter, *e->shardGroup, e, e->blockNumel());
    }
    for (const auto& ep : entries_)
      if (ep->sharded && !ep->fetched.empty()) add(Bucket::kRest, *ep->restGroup, ep.get(), ep->blockNumel());
    return out;
  }

  void build(Entry& e, const plan::ParamPlacement& pp, const GradReduction& red, mesh::DeviceMesh& mesh,
             const ParamStoreOptions& o) {
    e.pp = &pp;
    e.tpPartial = red.tpPartial;
    e.placements = pp.placements;
    e.style = pp.primaryStyle();
    const auto sizes = ref::meshSizes(mesh);
    const auto myCoords = mesh.coords();
    const auto& local = ref::getParam(*o.local, pp.name);
    e.planLocalShape = local.sizes().vec();
    MOE_ASSERT(!e.planLocalShape.empty(), "fsdp: scalar parameter ", pp.name);
    for (size_t d = 1; d < e.planLocalShape.size(); ++d) e.rowNumel *= e.planLocalShape[d];

    bool planSharded = false;
    for (int d = 0; d < mesh.ndim(); ++d) planSharded |= pp.placements[d].isSharded() && sizes[d] > 1;
    // The data-parallel dims the gradient is summed over. FSDP shards over
    // those the plan leaves replicated (a dim the plan shards holds other
    // rows on each rank: no FSDP piece of this plan-local tensor lives
    // there) unless experts stay as placed; the rest are all-reduced.
    auto groupDims = red.dataParallelDims;
    if (auto f = mutants::points().fsdpGroupDims) f(pp, mesh, groupDims);
    const bool keepPlaced = pp.isExpert && planSharded && o.expertSharding == "none";
    std::vector<std::string> fsdpDims, restDims;
    for (const auto& d : groupDims) {
      const int i = mesh.shape().index(d);
      if (i < 0 || sizes[i] <= 1) continue;
      (!keepPlaced && !pp.placements[i].isSharded() ? fsdpDims : restDims).push_back(d);
    }
    if (red.tpPartial) restDims.push_back("tp");
    // Every rank creates the same groups in the same order (plan order).
    e.shardGroup = storeGroup(mesh, kFsdpStoreName, fsdpDims);
    e.sharded = e.shardGroup->size() > 1;
    if (e.sharded) {
      e.restGroup = storeGroup(mesh, kFsdpStoreName, restDims);
    } else {
      auto reduceDims = restDims;
      reduceDims.insert(reduceDims.end(), fsdpDims.begin(), fsdpDims.end());
      e.reduceGroup = storeGroup(mesh, kFsdpStoreName, reduceDims);
    }

    if (e.sharded) {
      const int64_t ndim = static_cast<int64_t>(pp.globalShape.size());
      for (int i = 0; i < mesh.ndim(); ++i) {
        const auto& dim = mesh.dims()[i].name;
        if (std::find(fsdpDims.begin(), fsdpDims.end(), dim) == fsdpDims.end()) continue;
        MOE_ASSERT(pp.placements[i].isReplicate(), "fsdp: ", pp.name, " is not replicated on ", dim);
        // Plan dims after this one that split dim 0: this dim splits each of
        // their pieces (StridedShard), see the file comment.
        int64_t split = 1;
        for (int j = i + 1; j < mesh.ndim(); ++j) {
          const auto& p = pp.placements[j];
          if (!p.isSharded() || p.normalized(ndim).dim != 0) continue;
          if (p.kind != ref::PlacementKind::kShard)
            fail("fsdp: ", pp.name, ": cannot shard dim 0 over ", dim, " before ", mesh.dims()[j].name,
                 "'s ", p.toString(), " (placements ", ref::toString(pp.placements), ")");
          split *= sizes[j];
        }
        e.placements[i] = split > 1 ? Placement::stridedShard(0, split) : Placement::shard(0);
      }
      // The rows each group member holds, derived from the placements.
      const auto planLayout = ref::computeLayout(pp.globalShape, pp.placements, sizes, myCoords);
      const auto planRows = expandRows(planLayout.ranges[0]);
      int64_t off = 0;
      for (int m = 0; m < e.shardGroup->size(); ++m) {
        const auto coords = mesh.shape().coordsOf(e.shardGroup->globalRanks()[m]);
        ref::LocalLayout l;
        try {
          l = ref::computeLayout(pp.globalShape, e.placements, sizes, coords);
        } catch (const HarnessError& err) {
          fail("fsdp: ", pp.name, ": placements ", ref::toString(e.placements), " on mesh ",
               mesh.shape().describe(), ": ", err.what());
        }
        const auto rows = expandRows(l.ranges[0]);
        bool ok = off + static_cast<int64_t>(rows.size()) <= static_cast<int64_t>(planRows.size());
        for (size_t r = 0; ok && r < rows.size(); ++r) ok = rows[r] == planRows[off + r];
        for (size_t d = 1; ok && d < l.ranges.size(); ++d) ok = l.ranges[d] == planLayout.ranges[d];
        if (!ok)
          fail("fsdp: ", pp.name, ": placements ", ref::toString(e.placements), " give rank ",
               e.shardGroup->globalRanks()[m], " ", l.describe(),
               ", not the next row block of the plan-local tensor (", planLayout.describe(), ")");
        if (m == e.shardGroup->rank()) e.offset = off;
        e.pieces.push_back(static_cast<int64_t>(rows.size()));
        off += static_cast<int64_t>(rows.size());
      }
      MOE_ASSERT_EQ(off, e.planLocalShape[0], "fsdp: ", pp.name, " pieces vs plan-local rows");
      e.maxPiece = std::max<int64_t>(1, *std::max_element(e.pieces.begin(), e.pieces.end()));
      if (e.style.empty() || !planSharded) e.style = "fsdp";
      e.master = local.detach().narrow(0, e.offset, e.pieces[e.me()]).to(torch::kFloat).clone();
    } else {
      e.master = local.detach().to(torch::kFloat).clone();
    }
    e.master.requires_grad_(true);
    std::vector<std::string> replicated;
    for (int d = 0; d < mesh.ndim(); ++d)
      if (!e.placements[d].isSharded()) replicated.push_back(mesh.dims()[d].name);
    e.countsInNorm = countsOnce(mesh, replicated);
  }

  std::vector<ParamShard> shards(bool grads) const {
    std::vector<ParamShard> out;
    for (const auto& e : entries_) {
      auto t = grads ? e->grad : e->master;
      auto s = planShard(*e->pp, t.defined() ? t : torch::Tensor());
      s.placements = e->placements;
      s.style = e->style;
      // fsdp shards what it stores even where the plan's style did not.
      s.shardedByStyle = s.shardedByStyle || e->style == "fsdp";
      out.push_back(std::move(s));
    }
    return out;
  }

  const plan::AppliedPlan& plan_;
  const mesh::DeviceMesh& mesh_;
  const torch::ScalarType gatherDtype_;  // see the file comment
  std::vector<std::unique_ptr<Entry>> entries_;  // stable addresses: UnitGather holds them
  // Unit gathers by "<unit>|<group>|<gather dtype>|<dtype>"; stable addresses
  // (UnitGatherFn holds them). std::map: the same order on every rank.
  std::map<std::string, std::unique_ptr<UnitGather>> gathers_;
  std::map<std::string, size_t> index_;
};

}  // namespace

std::unique_ptr<ParamStore> makeFsdpStore(const ParamStoreOptions& options) {
  return std::make_unique<FsdpStore>(options);
}

MOE_REGISTER(StoreFactory, FunctionStoreFactory, "fsdp", makeFsdpStore);

}  // namespace moe::parallel
