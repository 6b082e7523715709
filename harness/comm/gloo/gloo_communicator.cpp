#include "harness/comm/gloo/gloo_communicator.h"

#include <net/if.h>

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

class GlooCommunicator : public C10dCommunicator {
 public:
  GlooCommunicator(std::string name, int rank, std::vector<int> globalRanks, GlooDevice device,
                   std::shared_ptr<store::Store> store, std::chrono::milliseconds timeout, bool verify)
      : C10dCommunicator(std::move(name), rank, globalRanks,
                         makeProcessGroup(store, rank, static_cast<int>(globalRanks.size()), device, timeout),
                         store, timeout),
        device_(std::move(device)) {
    setVerify(verify);
    setAwaitWorkRelease(true);
  }

  std::string backendName() const override { return "gloo"; }

 protected:
  void checkTensor(const at::Tensor& t, const char* op) const override {
    if (!t.device().is_cpu()) fail("gloo backend: ", op, " needs CPU tensors, got a tensor on ", t.device());
  }

  std::shared_ptr<Communicator> makeChild(const std::string& name, int myIndex, std::vector<int> members,
                                          std::shared_ptr<store::Store> store) override {
    return std::make_shared<GlooCommunicator>(name, myIndex, std::move(members), device_, std::move(store),
                                              timeout(), verifying());
  }

 private:
  GlooDevice device_;
};

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
    return std::make_shared<GlooCommunicator>("world", rank, ranks, device, store::prefixed(store, "gloo/world"),
                                              opts.timeout, opts.verify);
  } catch (const HarnessError&) {
    throw;
  } catch (const std::exception& e) {
    std::string what = e.what();
    fail("gloo: rank ", rank, " of ", worldSize, " could not connect to its peers: ", what.substr(0, what.find('\n')));
  }
}

}  // namespace moe::comm
