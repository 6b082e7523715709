// How to add a store (a data-parallel wrapper; the project's one plug-in
// idiom, common/registry.h): write stores/<name>_store.cpp with the store
// class (meeting param_store.h's contract) and the function creating it,
// ending with `MOE_REGISTER(StoreFactory, FunctionStoreFactory, "<name>",
// make<Name>Store);`. The
// stores/ folder is globbed by CMake: nothing else to touch.
#include "reference/parallel/param_store.h"

#include <algorithm>
#include <map>

#include "common/error.h"
#include "reference/mutants/mutation_points.h"
#include "reference/placement/layout.h"

namespace moe::parallel {

std::vector<std::string> paramStoreNames() { return Registry<StoreFactory>::instance().names(); }

std::unique_ptr<ParamStore> makeParamStore(const std::string& name, const ParamStoreOptions& options) {
  MOE_ASSERT(options.plan && options.mesh && options.local);
  MOE_ASSERT_EQ(options.reductions.size(), options.plan->params.size());
  return Registry<StoreFactory>::instance().get(name).make(options);
}

ParamShard planShard(const plan::ParamPlacement& pp, const torch::Tensor& local) {
  ParamShard s;
  s.name = pp.name;
  if (local.defined()) s.local = local.detach();
  s.placements = pp.placements;
  s.globalShape = pp.globalShape;
  s.style = pp.primaryStyle();
  s.shardedByStyle = pp.shardedByStyle();
  s.isExpert = pp.isExpert;
  return s;
}

bool countsOnce(const mesh::DeviceMesh& mesh, const std::vector<std::string>& replicatedDims) {
  for (const auto& d : replicatedDims)
    if (mesh.coord(d) != 0) return false;
  return true;
}

std::shared_ptr<comm::Communicator> storeGroup(mesh::DeviceMesh& mesh, const std::string& store,
                                               const std::vector<std::string>& dims) {
  // Mesh order, so the group's rank order is row-major over its dims (the
  // order the placements compose in) and the name is canonical.
  std::vector<std::string> ordered;
  for (const auto& d : mesh.dims())
    if (std::find(dims.begin(), dims.end(), d.name) != dims.end()) ordered.push_back(d.name);
  return mesh.world()->split(store + ":" + mesh.shape().groupName(ordered), mesh.shape().partition(ordered));
}

std::vector<CommExpectation> ParamStore::expectedStepComm() const {
  fail("data-parallel wrapper '", name(), "' does not declare its per-step communication ",
       "(ParamStore::expectedStepComm, param_store.h)");
}

torch::Tensor ParamStore::mutableMaster(const std::string& param) {
  fail("data-parallel wrapper '", name(), "' cannot hand out the master of ", param,
       ", which the model updates by its own rule after each step (deepseek_v3's correction bias); "
       "use --wrapper none (docs/families.md)");
}

std::vector<ParamShard> ParamStore::shardsOf(const std::vector<torch::Tensor>&) const {
  fail("data-parallel wrapper '", name(), "' cannot present optimizer state for a checkpoint ",
       "(ParamStore::shardsOf, param_store.h)");
}

std::string gatherUnitOf(const std::string& name) {
  const std::string pre = "model.layers.";
  if (name.rfind(pre, 0) != 0) return "model";
  return pre + name.substr(pre.size(), name.find('.', pre.size()) - pre.size());
}

void addExpectedCall(std::vector<CommExpectation>& out, const comm::Communicator& group,
                     comm::OpType op, int64_t bytesSent) {
  if (group.size() <= 1) return;
  for (auto& e : out)
    if (e.group == group.name() && e.op == op) {
      ++e.calls;
      *e.bytesSent += bytesSent;
      return;
    }
  CommExpectation e;
  e.group = group.name();
  e.op = op;
  e.calls = 1;
  e.bytesSent = bytesSent;
  out.push_back(e);
}

namespace {

// "none": the plan-local masters are kept whole on every data-parallel rank
// and gradients are all-reduced (sum) over the reduction group, coalesced as
// DDP does: the gradients of the parameters that share a reduction group are
// flattened, in plan order, into buckets of at most bucketCapBytes (a
// parameter larger than the cap is a bucket of its own), and each bucket is
// one all_reduce. The sum of every element is the same sum as one
// all_reduce per parameter; only the number of calls changes (one step of
// ep4 issued 32 per-parameter all_reduces before).
class ReplicatedStore : public ParamStore {
 public:
  explicit ReplicatedStore(const ParamStoreOptions& o) : plan_(*o.plan), mesh_(*o.mesh) {
    auto& mesh = *o.mesh;
    for (size_t i = 0; i < plan_.params.size(); ++i) {
      const auto& pp = plan_.params[i];
      auto t = ref::getParam(*o.local, pp.name).detach().to(torch::kFloat).clone();
      masters_.push_back(t.requires_grad_(true));
      auto dims = o.reductions[i].dataParallelDims;
      if (o.reductions[i].tpPartial) dims.push_back("tp");
      groups_.push_back(storeGroup(mesh, "none", dims));
      std::vector<std::string> replicated;
      for (int d = 0; d < mesh.ndim(); ++d)
        if (!pp.placements[d].isSharded()) replicated.push_back(mesh.dims()[d].name);
      countsInNorm_.push_back(countsOnce(mesh, replicated));
      index_[pp.name] = i;
    }
    grads_.resize(masters_.size());
    // Buckets: per reduction group (first use order), parameters in plan
    // order, closed when the next one would pass the cap.
    std::map<std::string, size_t> open;  // group name -> its bucket being filled
    for (size_t i = 0; i < masters_.size(); ++i) {
      const int64_t bytes = masters_[i].numel() * 4;
      auto it = open.find(groups_[i]->name());
      if (it == open.end() || (buckets_[it->second].bytes + bytes > o.bucketCapBytes && buckets_[it->second].bytes > 0)) {
        buckets_.push_back({groups_[i], {}, 0});
        it = open.insert_or_assign(groups_[i]->name(), buckets_.size() - 1).first;
      }
      buckets_[it->second].members.push_back(i);
      buckets_[it->second].bytes += bytes;
    }
  }

  std::string name() const override { return "none"; }

  void beginStep() override {
    for (auto& m : masters_) m.mutable_grad() = torch::Tensor();
  }

  torch::Tensor get(const std::string& name, torch::ScalarType dt) override {
    auto it = index_.find(name);
    if (it == index_.end()) fail("no parameter ", name, " in the plan");
    return masters_[it->second].to(dt);
  }

  double reduceGradients() override {
    for (const auto& b : buckets_) {
      std::vector<torch::Tensor> flat;
      for (size_t i : b.members) {
        auto g = masters_[i].grad();
        g = g.defined() ? g.detach().to(torch::kFloat).contiguous() : torch::zeros_like(masters_[i]).detach();
        grads_[i] = g;
        flat.push_back(g.reshape({-1}));
      }
      if (b.group->size() <= 1) continue;
      // Flattened into the bucket, reduced, copied back: between steps the
      // store holds each gradient once (the memory check counts it); the
      // bucket lives only during the reduction.
      auto buffer = torch::cat(flat);  // [sum of member numels]
      b.group->allReduce(buffer, comm::ReduceOp::kSum);
      int64_t offset = 0;
      for (size_t k = 0; k < b.members.size(); ++k) {
        const int64_t n = flat[k].numel();
        flat[k].copy_(buffer.narrow(0, offset, n));
        offset += n;
      }
    }
    double sumSq = 0;
    for (size_t i = 0; i < masters_.size(); ++i) {
      auto& g = grads_[i];
      const auto& mp = mutants::points();
      if (mp.reducedGrad) mp.reducedGrad(plan_.params[i], mesh_, groups_[i]->size(), g);
      bool counts = countsInNorm_[i];
      if (mp.countsInNorm) mp.countsInNorm(plan_.params[i], counts);
      if (counts) sumSq += g.to(torch::kDouble).pow(2).sum().item<double>();
    }
    return sumSq;
  }

  std::vector<torch::Tensor> masters() override { return masters_; }
  std::vector<torch::Tensor> grads() override { return grads_; }

  std::vector<ParamShard> paramShards() const override { return shards(masters_); }
  std::vector<ParamShard> gradShards() const override { return shards(grads_); }
  // masters() are the plan-local tensors themselves.
  std::vector<ParamShard> shardsOf(const std::vector<torch::Tensor>& likeMasters) const override {
    MOE_ASSERT_EQ(likeMasters.size(), masters_.size());
    return shards(likeMasters);
  }

  torch::Tensor mutableMaster(const std::string& name) override {
    auto it = index_.find(name);
    if (it == index_.end()) fail("no parameter ", name, " in the plan");
    return masters_[it->second];
  }

  StoreMemory memory() const override {
    StoreMemory m;
    for (const auto& t : masters_) m.paramBytes += t.numel() * static_cast<int64_t>(t.element_size());
    m.gradBytes = m.paramBytes;
    m.optimizerBytes = 2 * m.paramBytes;
    return m;
  }

  // One fp32 all_reduce per bucket per step (the layout the constructor
  // declared), whatever the routing.
  std::vector<CommExpectation> expectedStepComm() const override {
    std::vector<CommExpectation> out;
    for (const auto& b : buckets_) {
      const int64_t n = b.group->size();
      addExpectedCall(out, *b.group, comm::OpType::kAllReduce, 2 * (n - 1) * b.bytes / n);
    }
    return out;
  }

 private:
  std::vector<ParamShard> shards(const std::vector<torch::Tensor>& ts) const {
    std::vector<ParamShard> out;
    for (size_t i = 0; i < plan_.params.size(); ++i)
      out.push_back(planShard(plan_.params[i], ts[i].defined() ? ts[i] : torch::Tensor()));
    return out;
  }

  const plan::AppliedPlan& plan_;
  const mesh::DeviceMesh& mesh_;
  std::vector<torch::Tensor> masters_, grads_;
  std::vector<std::shared_ptr<comm::Communicator>> groups_;
  struct Bucket {
    std::shared_ptr<comm::Communicator> group;
    std::vector<size_t> members;  // indices into masters_, plan order
    int64_t bytes = 0;            // fp32 bytes of the flattened gradients
  };
  std::vector<Bucket> buckets_;
  std::vector<bool> countsInNorm_;
  std::map<std::string, size_t> index_;
};

}  // namespace

std::unique_ptr<ParamStore> makeReplicatedStore(const ParamStoreOptions& options) {
  return std::make_unique<ReplicatedStore>(options);
}

MOE_REGISTER(StoreFactory, FunctionStoreFactory, "none", makeReplicatedStore);

}  // namespace moe::parallel
