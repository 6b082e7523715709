#include "reference/parallel/comm_ops.h"

#include "common/error.h"
#include "reference/placement/layout.h"

namespace moe::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

int64_t toHandle(comm::Communicator* c) { return reinterpret_cast<intptr_t>(c); }
comm::Communicator& fromHandle(const c10::IValue& v) {
  return *reinterpret_cast<comm::Communicator*>(static_cast<intptr_t>(v.toInt()));
}

int64_t sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (auto x : v) s += x;
  return s;
}

torch::Tensor rawAllToAll(const torch::Tensor& x, comm::Communicator& g,
                          const std::vector<int64_t>& outSplits,
                          const std::vector<int64_t>& inSplits) {
  auto in = x.contiguous();
  MOE_ASSERT_EQ(in.size(0), sum(inSplits), "all_to_all input rows vs in splits");
  auto shape = in.sizes().vec();
  shape[0] = sum(outSplits);
  auto out = torch::empty(shape, in.options());
  g.allToAllSingle(out, in, outSplits, inSplits);
  return out;
}

// Moves `dim` to the front so the row-wise collectives apply.
torch::Tensor front(const torch::Tensor& x, int64_t dim) {
  return dim == 0 ? x.contiguous() : x.transpose(0, dim).contiguous();
}
torch::Tensor back(const torch::Tensor& x, int64_t dim) {
  return dim == 0 ? x : x.transpose(0, dim).contiguous();
}

torch::Tensor rawGather(const torch::Tensor& x, comm::Communicator& g, int64_t dim,
                        const std::vector<int64_t>& pieces) {
  auto in = front(x, dim);
  MOE_ASSERT_EQ(in.size(0), pieces[g.rank()], "gather: local piece vs expected size");
  auto shape = in.sizes().vec();
  shape[0] = sum(pieces);
  auto out = torch::empty(shape, in.options());
  g.allGather(out, in, pieces);
  return back(out, dim);
}

torch::Tensor rawReduceScatter(const torch::Tensor& x, comm::Communicator& g, int64_t dim,
                               const std::vector<int64_t>& pieces) {
  auto in = front(x, dim);
  MOE_ASSERT_EQ(in.size(0), sum(pieces), "reduce_scatter: input size vs pieces");
  auto shape = in.sizes().vec();
  shape[0] = pieces[g.rank()];
  auto out = torch::empty(shape, in.options());
  g.reduceScatter(out, in, comm::ReduceOp::kSum, pieces);
  return back(out, dim);
}

struct AllToAllFn : public torch::autograd::Function<AllToAllFn> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t handle,
                               std::vector<int64_t> outSplits, std::vector<int64_t> inSplits) {
    ctx->saved_data["g"] = handle;
    ctx->saved_data["out"] = outSplits;
    ctx->saved_data["in"] = inSplits;
    return rawAllToAll(x, fromHandle(handle), outSplits, inSplits);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto outSplits = ctx->saved_data["out"].toIntVector();
    auto inSplits = ctx->saved_data["in"].toIntVector();
    // Reverse direction: what we received goes back to its sender.
    auto gx = rawAllToAll(grads[0], fromHandle(ctx->saved_data["g"]), inSplits, outSplits);
    return {gx, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

struct CopyFn : public torch::autograd::Function<CopyFn> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t handle) {
    ctx->saved_data["g"] = handle;
    return x.clone();
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto g = grads[0].contiguous().clone();
    fromHandle(ctx->saved_data["g"]).allReduce(g, comm::ReduceOp::kSum);
    return {g, torch::Tensor()};
  }
};

struct ReduceFn : public torch::autograd::Function<ReduceFn> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t handle) {
    auto y = x.contiguous().clone();
    fromHandle(handle).allReduce(y, comm::ReduceOp::kSum);
    return y;
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    return {grads[0], torch::Tensor()};
  }
};

struct GatherFn : public torch::autograd::Function<GatherFn> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t handle, int64_t dim,
                               std::vector<int64_t> pieces) {
    ctx->saved_data["g"] = handle;
    ctx->saved_data["dim"] = dim;
    ctx->saved_data["pieces"] = pieces;
    return rawGather(x, fromHandle(handle), dim, pieces);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto gx = rawReduceScatter(grads[0], fromHandle(ctx->saved_data["g"]),
                               ctx->saved_data["dim"].toInt(),
                               ctx->saved_data["pieces"].toIntVector());
    return {gx, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

struct ReduceScatterFn : public torch::autograd::Function<ReduceScatterFn> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t handle, int64_t dim,
                               std::vector<int64_t> pieces) {
    ctx->saved_data["g"] = handle;
    ctx->saved_data["dim"] = dim;
    ctx->saved_data["pieces"] = pieces;
    return rawReduceScatter(x, fromHandle(handle), dim, pieces);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto gx = rawGather(grads[0], fromHandle(ctx->saved_data["g"]), ctx->saved_data["dim"].toInt(),
                        ctx->saved_data["pieces"].toIntVector());
    return {gx, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

int64_t normDim(const torch::Tensor& x, int64_t dim) { return dim < 0 ? dim + x.dim() : dim; }

}  // namespace

std::vector<int64_t> chunkSizes(int64_t n, int64_t parts) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < parts; ++i) out.push_back(ref::chunkRange(n, parts, i).length);
  return out;
}

torch::Tensor allToAllRows(const torch::Tensor& x, comm::Communicator& group,
                           const std::vector<int64_t>& outSplits,
                           const std::vector<int64_t>& inSplits) {
  if (group.size() == 1) return x;
  return AllToAllFn::apply(x, toHandle(&group), outSplits, inSplits);
}

torch::Tensor copyToGroup(const torch::Tensor& x, comm::Communicator& group) {
  if (group.size() == 1) return x;
  return CopyFn::apply(x, toHandle(&group));
}

torch::Tensor reduceFromGroup(const torch::Tensor& x, comm::Communicator& group) {
  if (group.size() == 1) return x;
  return ReduceFn::apply(x, toHandle(&group));
}

torch::Tensor gatherAlongDim(const torch::Tensor& x, comm::Communicator& group, int64_t dim,
                             const std::vector<int64_t>& piecesPerRank) {
  if (group.size() == 1) return x;
  return GatherFn::apply(x, toHandle(&group), normDim(x, dim), piecesPerRank);
}

torch::Tensor reduceScatterAlongDim(const torch::Tensor& x, comm::Communicator& group, int64_t dim,
                                    const std::vector<int64_t>& piecesPerRank) {
  if (group.size() == 1) return x;
  return ReduceScatterFn::apply(x, toHandle(&group), normDim(x, dim), piecesPerRank);
}

torch::Tensor gatherAlongDimNoGrad(const torch::Tensor& x, comm::Communicator& group, int64_t dim,
                                   const std::vector<int64_t>& piecesPerRank) {
  if (group.size() == 1) return x;
  torch::NoGradGuard ng;
  return rawGather(x, group, normDim(x, dim), piecesPerRank);
}

}  // namespace moe::parallel
