#include "harness/comm/gloo/gloo_communicator.h"

#include <net/if.h>

#include <ATen/Context.h>

// Declares USE_C10D_GLOO's header; the Gloo names it mentions come from
// c10d_decls/ (see its README): libtorch's wheel has no Gloo headers, and
// the backend uses no Gloo API of its own.
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "harness/comm/c10d_communicator.h"
#include "harness/comm/c10d_store.h"

namespace moe::comm {
namespace {

using GlooDevice = std::shared_ptr<::gloo::transport::Device>;

// Finds out whether `iface` names a network interface (else it is a host
// name or address to bind).
bool isInterfaceName(const std::string& s) { return if_nametoindex(s.c_str()) != 0; }

c10::intrusive_ptr<c10d::ProcessGroupGloo> makeProcessGroup(std::shared_ptr<store::Store> store, int rank,
                                                             int size, const GlooDevice& device,
                                                             std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  options->devices.push_back(device);
  options->threads = 1;
  return c10::make_intrusive<c10d::ProcessGroupGloo>(asC10dStore(std::move(store)), rank, size, options);
}

// With a CUDA tensor device (the device lane "cuda" over gloo) every op
// copies its CUDA tensors to the host, runs there and copies the results
// back, as ProcessGroupGloo itself does for the CUDA ops it has; staging in
// one place also covers the ops it has none for (send/recv), and keeps the
// process group's own buffers on the host.
class GlooCommunicator : public C10dCommunicator {
 public:
  GlooCommunicator(std::string name, int rank, std::vector<int> globalRanks, GlooDevice device,
                   at::Device tensorDevice, std::shared_ptr<store::Store> store, std::chrono::milliseconds timeout,
                   bool verify)
      : C10dCommunicator(std::move(name), rank, globalRanks,
                         makeProcessGroup(store, rank, static_cast<int>(globalRanks.size()), device, timeout),
                         store, timeout),
        device_(std::move(device)),
        tensorDevice_(tensorDevice) {
    setVerify(verify);
    setAwaitWorkRelease(true);
  }

  std::string backendName() const override { return "gloo"; }
  at::Device device() const override { return tensorDevice_; }
  bool boundedWaits() const override { return true; }

 protected:
  // The process group only ever sees host tensors (staged ones on a CUDA lane).
  void checkTensor(const at::Tensor& t, const char* op) const override {
    if (!t.device().is_cpu()) fail("gloo backend: ", op, " needs CPU tensors, got a tensor on ", t.device());
  }

  void doAllReduce(at::Tensor& t, ReduceOp op) override {
    if (!staged()) return C10dCommunicator::doAllReduce(t, op);
    at::Tensor h = toHost(t, "all_reduce");
    C10dCommunicator::doAllReduce(h, op);
    t.copy_(h);
  }
  void doBroadcast(at::Tensor& t, int root) override {
    if (!staged()) return C10dCommunicator::doBroadcast(t, root);
    at::Tensor h = toHost(t, "broadcast");
    C10dCommunicator::doBroadcast(h, root);
    t.copy_(h);
  }
  void doSend(const at::Tensor& t, int peer) override {
    if (!staged()) return C10dCommunicator::doSend(t, peer);
    C10dCommunicator::doSend(toHost(t, "send"), peer);
  }
  void doRecv(at::Tensor& t, int peer) override {
    if (!staged()) return C10dCommunicator::doRecv(t, peer);
    at::Tensor h = toHost(t, "recv");
    C10dCommunicator::doRecv(h, peer);
    t.copy_(h);
  }
  void doAllGather(at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& rowsPerRank) override {
    if (!staged()) return C10dCommunicator::doAllGather(out, in, rowsPerRank);
    at::Tensor h = toHost(out, "all_gather");
    C10dCommunicator::doAllGather(h, toHost(in, "all_gather"), rowsPerRank);
    out.copy_(h);
  }
  void doReduceScatter(at::Tensor& out, const at::Tensor& in, ReduceOp op,
                       const std::vector<int64_t>& rowsPerRank) override {
    if (!staged()) return C10dCommunicator::doReduceScatter(out, in, op, rowsPerRank);
    at::Tensor h = toHost(out, "reduce_scatter");
    C10dCommunicator::doReduceScatter(h, toHost(in, "reduce_scatter"), op, rowsPerRank);
    out.copy_(h);
  }
  void doAllToAll(at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& outSplits,
                  const std::vector<int64_t>& inSplits) override {
    if (!staged()) return C10dCommunicator::doAllToAll(out, in, outSplits, inSplits);
    at::Tensor h = toHost(out, "all_to_all");
    C10dCommunicator::doAllToAll(h, toHost(in, "all_to_all"), outSplits, inSplits);
    out.copy_(h);
  }

  std::shared_ptr<Communicator> makeChild(const std::string& name, int myIndex, std::vector<int> members,
                                          std::shared_ptr<store::Store> store) override {
    return std::make_shared<GlooCommunicator>(name, myIndex, std::move(members), device_, tensorDevice_,
                                              std::move(store), timeout(), verifying());
  }

 private:
  bool staged() const { return tensorDevice_.is_cuda(); }
  // A host copy of `t`, which must be on this communicator's CUDA device.
  at::Tensor toHost(const at::Tensor& t, const char* op) const {
    if (t.device() != tensorDevice_)
      fail("gloo backend (device ", tensorDevice_, "): ", op, " needs tensors on ", tensorDevice_,
           ", got a tensor on ", t.device());
    return t.to(at::kCPU).contiguous();
  }

  GlooDevice device_;
  at::Device tensorDevice_;
};

// CPU, or for device type "cuda" the rank's GPU: CommOptions::device, else
// LOCAL_RANK modulo the visible devices (gloo ranks may share a GPU).
at::Device tensorDeviceOf(const CommOptions& opts) {
  if (opts.deviceType != "cuda") return at::kCPU;
  const int count = static_cast<int>(at::getNumGPUs());
  if (count < 1) fail("gloo: device cuda requested but no CUDA device is visible to this process");
  const int index = opts.device >= 0 ? opts.device : opts.localRank % count;
  if (index >= count)
    fail("gloo: CUDA device ", index, " (from CommOptions::device) does not exist; found ", count, " device(s)");
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
}

}  // namespace

std::shared_ptr<Communicator> createGlooWorld(std::shared_ptr<store::Store> store, int rank, int worldSize,
                                              const CommOptions& opts) {
  if (worldSize < 1 || rank < 0 || rank >= worldSize)
    fail("gloo: invalid rank ", rank, " for world size ", worldSize);
  const std::string where = opts.iface.empty() ? "127.0.0.1" : opts.iface;
  GlooDevice device;
  try {
    device = opts.iface.empty() || !isInterfaceName(opts.iface)
                 ? c10d::ProcessGroupGloo::createDeviceForHostname(where)
                 : c10d::ProcessGroupGloo::createDeviceForInterface(opts.iface);
  } catch (const std::exception& e) {
    std::string what = e.what();
    fail("gloo: cannot create TCP device on '", where, "': ", what.substr(0, what.find('\n')));
  }
  std::vector<int> ranks(worldSize);
  for (int i = 0; i < worldSize; ++i) ranks[i] = i;
  try {
    return std::make_shared<GlooCommunicator>("world", rank, ranks, device, tensorDeviceOf(opts),
                                              store::prefixed(store, "gloo/world"), opts.timeout, opts.verify);
  } catch (const HarnessError&) {
    throw;
  } catch (const std::exception& e) {
    std::string what = e.what();
    fail("gloo: rank ", rank, " of ", worldSize, " could not connect to its peers: ", what.substr(0, what.find('\n')));
  }
}

}  // namespace moe::comm
