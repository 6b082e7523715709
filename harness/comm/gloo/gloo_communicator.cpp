#include "harness/comm/gloo/gloo_communicator.h"

#include <net/if.h>

#include <gloo/allgatherv.h>
#include <gloo/allreduce.h>
#include <gloo/alltoallv.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

namespace moe::comm {
namespace {

// Gloo's rendezvous talks to our store through this adapter.
class GlooStore : public gloo::rendezvous::Store {
 public:
  explicit GlooStore(std::shared_ptr<store::Store> s) : s_(std::move(s)) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    s_->set(key, std::vector<uint8_t>(data.begin(), data.end()));
  }
  std::vector<char> get(const std::string& key) override {
    auto v = s_->get(key);
    return std::vector<char>(v.begin(), v.end());
  }
  void wait(const std::vector<std::string>& keys) override { s_->wait(keys, s_->timeout()); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& t) override {
    s_->wait(keys, t);
  }

 private:
  std::shared_ptr<store::Store> s_;
};

template <typename T>
void reduceInto(void* c, const void* a, const void* b, size_t n, ReduceOp op) {
  auto* out = static_cast<T*>(c);
  const auto* x = static_cast<const T*>(a);
  const auto* y = static_cast<const T*>(b);
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<T>(x[i] + y[i]);
      break;
    case ReduceOp::kMax:
      for (size_t i = 0; i < n; ++i) out[i] = x[i] < y[i] ? y[i] : x[i];
      break;
    case ReduceOp::kMin:
      for (size_t i = 0; i < n; ++i) out[i] = y[i] < x[i] ? y[i] : x[i];
      break;
  }
}

template <typename T>
void glooAllReduce(const std::shared_ptr<gloo::Context>& ctx, at::Tensor& t, ReduceOp op,
                   std::chrono::milliseconds timeout) {
  gloo::AllreduceOptions opts(ctx);
  opts.setOutput(static_cast<T*>(t.data_ptr()), static_cast<size_t>(t.numel()));
  opts.setReduceFunction([op](void* c, const void* a, const void* b, size_t n) { reduceInto<T>(c, a, b, n, op); });
  opts.setTimeout(timeout);
  gloo::allreduce(opts);
}

// Finds out whether `iface` names a network interface (else it is a host
// name or address to bind).
bool isInterfaceName(const std::string& s) { return if_nametoindex(s.c_str()) != 0; }

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(std::string name, int rank, std::vector<int> globalRanks, std::shared_ptr<gloo::Context> ctx,
                   std::shared_ptr<gloo::transport::Device> device, std::shared_ptr<store::Store> store,
                   std::chrono::milliseconds timeout, bool verify)
      : Communicator(std::move(name), rank, std::move(globalRanks)),
        ctx_(std::move(ctx)),
        device_(std::move(device)),
        store_(std::move(store)),
        timeout_(timeout) {
    setVerify(verify);
  }

  std::string backendName() const override { return "gloo"; }

 protected:
  // Gloo failures (peer gone, timeout) are turned into HarnessErrors that
  // name the op, the group and this rank.
  template <typename Fn>
  void guarded(const char* op, Fn&& fn) {
    try {
      fn();
    } catch (const HarnessError&) {
      throw;
    } catch (const std::exception& e) {
      std::string what = e.what();
      fail("gloo ", op, " on group '", name(), "' (global rank ", globalRanks()[rank()],
           ") failed: ", what.substr(0, what.find('\n')));
    }
  }

  void requireCpu(const at::Tensor& t, const char* op) const {
    if (!t.device().is_cpu()) fail("gloo backend: ", op, " needs CPU tensors, got a tensor on ", t.device());
  }

  void doAllReduce(at::Tensor& t, ReduceOp op) override {
    requireCpu(t, "all_reduce");
    guarded("all_reduce", [&] {
      switch (t.scalar_type()) {
        case at::kFloat: glooAllReduce<float>(ctx_, t, op, timeout_); break;
        case at::kDouble: glooAllReduce<double>(ctx_, t, op, timeout_); break;
        case at::kLong: glooAllReduce<int64_t>(ctx_, t, op, timeout_); break;
        case at::kBFloat16: glooAllReduce<c10::BFloat16>(ctx_, t, op, timeout_); break;
        case at::kHalf: glooAllReduce<c10::Half>(ctx_, t, op, timeout_); break;
        default: MOE_ASSERT(false, "dtype passed checkDtype: ", t.scalar_type());
      }
    });
    if (op == ReduceOp::kAvg) divideBySize(t);
  }

  void divideBySize(at::Tensor& t) {
    if (t.scalar_type() == at::kLong) t.div_(size(), "trunc");
    else t.div_(size());
  }

  void doBroadcast(at::Tensor& t, int root) override {
    requireCpu(t, "broadcast");
    if (t.numel() == 0) return;
    guarded("broadcast", [&] {
      gloo::BroadcastOptions opts(ctx_);
      opts.setOutput(static_cast<uint8_t*>(t.data_ptr()), t.nbytes());
      opts.setRoot(root);
      opts.setTimeout(timeout_);
      gloo::broadcast(opts);
    });
  }

  void doBarrier() override {
    guarded("barrier", [&] {
      gloo::BarrierOptions opts(ctx_);
      opts.setTimeout(timeout_);
      gloo::barrier(opts);
    });
  }

  static constexpr uint64_t kP2pSlot = 0x70327000;  // one slot for all p2p: FIFO per pair

  void doSend(const at::Tensor& t, int peer) override {
    requireCpu(t, "send");
    if (t.numel() == 0) return;
    guarded("send", [&] {
      auto buf = ctx_->createUnboundBuffer(const_cast<void*>(t.data_ptr()), t.nbytes());
      buf->send(peer, kP2pSlot);
      if (!buf->waitSend(timeout_)) fail("send to rank ", peer, " was aborted");
    });
  }

  void doRecv(at::Tensor& t, int peer) override {
    requireCpu(t, "recv");
    if (t.numel() == 0) return;
    guarded("recv", [&] {
      auto buf = ctx_->createUnboundBuffer(t.data_ptr(), t.nbytes());
      buf->recv(peer, kP2pSlot);
      if (!buf->waitRecv(timeout_)) fail("recv from rank ", peer, " was aborted");
    });
  }

  void doAllGather(at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& rows) override {
    requireCpu(in, "all_gather");
    requireCpu(out, "all_gather");
    if (out.numel() == 0) return;
    const size_t rowBytes = out.nbytes() / static_cast<size_t>(out.size(0));
    std::vector<size_t> bytes;
    for (int64_t r : rows) bytes.push_back(static_cast<size_t>(r) * rowBytes);
    guarded("all_gather", [&] {
      gloo::AllgathervOptions opts(ctx_);
      // Gloo wants a non-null input pointer even for an empty contribution.
      static uint8_t empty = 0;
      uint8_t* inPtr = in.numel() ? static_cast<uint8_t*>(const_cast<void*>(in.data_ptr())) : &empty;
      opts.setInput(inPtr, in.nbytes());
      opts.setOutput(static_cast<uint8_t*>(out.data_ptr()), bytes);
      opts.setTimeout(timeout_);
      gloo::allgatherv(opts);
    });
  }

  void doReduceScatter(at::Tensor& out, const at::Tensor& in, ReduceOp op,
                       const std::vector<int64_t>& rows) override {
    requireCpu(in, "reduce_scatter");
    requireCpu(out, "reduce_scatter");
    const int n = size();
    const int64_t mine = rows[rank()];
    std::vector<int64_t> outRows(n, mine);
    std::vector<int64_t> shape = in.sizes().vec();
    shape[0] = mine * n;
    at::Tensor blocks = at::empty(shape, in.options());
    alltoallBytes(blocks, in, outRows, rows, "reduce_scatter");
    // Local reduction in rank order, in the tensor's dtype.
    if (mine == 0) return;
    out.copy_(blocks.narrow(0, 0, mine));
    for (int i = 1; i < n; ++i) out.add_(blocks.narrow(0, i * mine, mine));
    if (op == ReduceOp::kAvg) divideBySize(out);
  }

  void doAllToAll(at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& outSplits,
                  const std::vector<int64_t>& inSplits) override {
    requireCpu(in, "all_to_all");
    requireCpu(out, "all_to_all");
    alltoallBytes(out, in, outSplits, inSplits, "all_to_all");
  }

  void alltoallBytes(at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& outRows,
                     const std::vector<int64_t>& inRows, const char* op) {
    auto rowBytes = [](const at::Tensor& t) {
      int64_t n = t.element_size();
      for (int64_t d = 1; d < t.dim(); ++d) n *= t.size(d);
      return n;
    };
    const int64_t rbIn = rowBytes(in), rbOut = rowBytes(out);
    std::vector<int64_t> inBytes, outBytes;
    for (int64_t r : inRows) inBytes.push_back(r * rbIn);
    for (int64_t r : outRows) outBytes.push_back(r * rbOut);
    static uint8_t empty[1] = {0};
    uint8_t* inPtr = in.numel() ? static_cast<uint8_t*>(const_cast<void*>(in.data_ptr())) : empty;
    uint8_t* outPtr = out.numel() ? static_cast<uint8_t*>(out.data_ptr()) : empty;
    guarded(op, [&] {
      gloo::AlltoallvOptions opts(ctx_);
      opts.setInput(inPtr, inBytes);
      opts.setOutput(outPtr, outBytes);
      opts.setTimeout(timeout_);
      gloo::alltoallv(opts);
    });
  }

  std::shared_ptr<Communicator> doSplit(const std::string& name, const std::vector<std::vector<int>>& groups,
                                        int groupIndex) override {
    if (groupIndex < 0) return nullptr;
    const auto& members = groups[groupIndex];
    int myIndex = static_cast<int>(std::find(members.begin(), members.end(), rank()) - members.begin());
    std::vector<int> global;
    for (int r : members) global.push_back(globalRanks()[r]);
    auto ctx = std::make_shared<gloo::rendezvous::Context>(myIndex, static_cast<int>(members.size()));
    ctx->setTimeout(timeout_);
    // Each group of the partition rendezvous under its own prefix.
    GlooStore gs(store::prefixed(store_, "gloo/" + name + "/" + std::to_string(groupIndex)));
    try {
      ctx->connectFullMesh(gs, device_);
    } catch (const std::exception& e) {
      std::string what = e.what();
      fail("gloo: global rank ", globalRanks()[rank()], " could not connect group '", name, "': ",
           what.substr(0, what.find('\n')));
    }
    return std::make_shared<GlooCommunicator>(name, myIndex, global, ctx, device_, store_, timeout_, verifying());
  }

 private:
  std::shared_ptr<gloo::Context> ctx_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<store::Store> store_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

std::shared_ptr<Communicator> createGlooWorld(std::shared_ptr<store::Store> store, int rank, int worldSize,
                                              const CommOptions& opts) {
  if (worldSize < 1 || rank < 0 || rank >= worldSize)
    fail("gloo: invalid rank ", rank, " for world size ", worldSize);
  gloo::transport::tcp::attr attr;
  if (opts.iface.empty()) attr.hostname = "127.0.0.1";
  else if (isInterfaceName(opts.iface)) attr.iface = opts.iface;
  else attr.hostname = opts.iface;
  std::shared_ptr<gloo::transport::Device> device;
  try {
    device = gloo::transport::tcp::CreateDevice(attr);
  } catch (const std::exception& e) {
    fail("gloo: cannot create TCP device on '", opts.iface.empty() ? "127.0.0.1" : opts.iface, "': ", e.what());
  }
  auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, worldSize);
  ctx->setTimeout(opts.timeout);
  GlooStore gs(store::prefixed(store, "gloo/world"));
  try {
    ctx->connectFullMesh(gs, device);
  } catch (const std::exception& e) {
    std::string what = e.what();
    fail("gloo: rank ", rank, " of ", worldSize, " could not connect to its peers: ", what.substr(0, what.find('\n')));
  }
  std::vector<int> ranks(worldSize);
  for (int i = 0; i < worldSize; ++i) ranks[i] = i;
  return std::make_shared<GlooCommunicator>("world", rank, ranks, ctx, device, store, opts.timeout, opts.verify);
}

}  // namespace moe::comm
