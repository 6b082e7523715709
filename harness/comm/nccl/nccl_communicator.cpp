// The NCCL backend of the Communicator: c10d::ProcessGroupNCCL, the NCCL
// libtorch itself links, under the harness's C10dCommunicator (checks,
// verification, flight recorder). Also the device probe, run in a forked
// child so neither a broken driver nor CUDA's fork-unsafety reaches the
// caller.
#include "harness/comm/nccl/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "harness/comm/c10d_communicator.h"
#include "harness/comm/c10d_store.h"

namespace moe::comm {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kBackend = "nccl";

c10::intrusive_ptr<c10d::ProcessGroupNCCL> makeProcessGroup(std::shared_ptr<store::Store> store, int rank,
                                                             int size, std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(asC10dStore(std::move(store)), rank, size, options);
}

class NcclCommunicator final : public C10dCommunicator {
 public:
  NcclCommunicator(std::string name, int rank, std::vector<int> globalRanks, int device,
                   std::shared_ptr<store::Store> store, std::chrono::milliseconds timeout, bool verify)
      : C10dCommunicator(std::move(name), rank, globalRanks,
                         makeProcessGroup(store, rank, static_cast<int>(globalRanks.size()), timeout), store,
                         timeout),
        device_(device) {
    setVerify(verify);
  }

  std::string backendName() const override { return kBackend; }
  at::Device device() const override {
    return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_));
  }

 protected:

  void checkTensor(const at::Tensor& t, const char* op) const override {
    if (!t.is_cuda())
      fail(where(), ": ", kBackend, " backend: ", op, " needs CUDA tensors, but a tensor is on ", t.device());
    if (t.get_device() != device_)
      fail(where(), ": ", kBackend, " backend: ", op, ": a tensor is on ", t.device(),
           " but this communicator uses cuda:", device_);
  }

  // c10d's Work::wait() only orders the current stream after NCCL's; the
  // Communicator contract is synchronous, so wait for the stream too.
  void afterWork() override {
    c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_)).synchronize();
  }

  std::shared_ptr<Communicator> makeChild(const std::string& name, int myIndex, std::vector<int> members,
                                          std::shared_ptr<store::Store> store) override {
    return std::make_shared<NcclCommunicator>(name, myIndex, std::move(members), device_, std::move(store),
                                              timeout(), verifying());
  }

 private:
  std::string where() const {
    return str("rank ", rank(), " of nccl communicator '", name(), "' (size ", size(), ", world rank ",
               globalRanks().at(rank()), ", cuda:", device_, ")");
  }

  int device_;
};

// Result of counting CUDA devices in a child process (see ncclUsableImpl).
struct DeviceProbe {
  bool ok = false;
  int count = 0;
  std::string error;  // why counting failed, when !ok
};

// Counts devices in a forked child so this process never initialises CUDA:
// CUDA does not survive fork(), and the launcher forks ranks from the
// process that asks whether they can run. The child writes "ok <n>" or
// "err <text>" to a pipe.
DeviceProbe probeDevices() {
  DeviceProbe probe;
  int fds[2];
  if (pipe(fds) != 0) {
    probe.error = str("pipe() failed: ", std::strerror(errno));
    return probe;
  }
  const pid_t pid = fork();
  if (pid < 0) {
    probe.error = str("fork() failed: ", std::strerror(errno));
    close(fds[0]);
    close(fds[1]);
    return probe;
  }
  if (pid == 0) {
    close(fds[0]);
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    char buf[512];
    const int len = e == cudaSuccess
                        ? std::snprintf(buf, sizeof(buf), "ok %d", n)
                        : std::snprintf(buf, sizeof(buf), "err %s", cudaGetErrorString(e));
    if (len > 0) (void)!write(fds[1], buf, std::min<size_t>(len, sizeof(buf) - 1));
    _exit(0);
  }
  close(fds[1]);
  std::string reply;
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  bool timedOut = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      timedOut = true;
      break;
    }
    pollfd pfd{fds[0], POLLIN, 0};
    const int ready = poll(&pfd, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      timedOut = ready == 0;
      break;
    }
    char buf[256];
    const ssize_t got = read(fds[0], buf, sizeof(buf));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // EOF: the child is done
    reply.append(buf, static_cast<size_t>(got));
  }
  close(fds[0]);
  if (timedOut) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timedOut) {
    probe.error = "cudaGetDeviceCount did not return within 60 s (probe process killed)";
  } else if (reply.rfind("ok ", 0) == 0) {
    probe.ok = true;
    probe.count = std::atoi(reply.c_str() + 3);
  } else if (reply.rfind("err ", 0) == 0) {
    probe.error = str("cudaGetDeviceCount failed: ", reply.substr(4));
  } else {
    probe.error = str("the cudaGetDeviceCount probe process ended without an answer (wait status ",
                      status, ")");
  }
  return probe;
}

std::string gpus(int n) { return n == 1 ? "1 GPU" : str(n, " GPUs"); }

// Forked ranks inherit the cached answer and never probe again.
const DeviceProbe& cachedProbe() {
  static const DeviceProbe probe = probeDevices();
  return probe;
}

}  // namespace

bool ncclUsableImpl(int worldSize, std::string* reason) {
  const DeviceProbe& probe = cachedProbe();
  std::string why;
  if (!probe.ok) {
    why = str("nccl backend needs ", gpus(worldSize), "; ", probe.error);
  } else if (probe.count < worldSize) {
    why = str("nccl backend needs ", gpus(worldSize), "; found ", probe.count);
  }
  if (reason != nullptr) *reason = why;
  return why.empty();
}

bool cudaUsableImpl(int needed, std::string* reason) {
  const DeviceProbe& probe = cachedProbe();
  std::string why;
  if (!probe.ok) {
    why = str("no usable CUDA driver or device: ", probe.error);
  } else if (probe.count < needed) {
    why = str("fewer GPUs than needed: needs ", gpus(needed), ", found ", probe.count);
  }
  if (reason != nullptr) *reason = why;
  return why.empty();
}

std::shared_ptr<Communicator> createNcclWorld(std::shared_ptr<store::Store> store, int rank,
                                              int worldSize, const CommOptions& opts) {
  const std::string where = str("rank ", rank, ": creating the nccl world communicator");
  if (store == nullptr) fail(where, ": no store given");
  if (worldSize < 1 || rank < 0 || rank >= worldSize)
    fail(where, ": rank ", rank, " is outside world size ", worldSize);

  const int device = opts.device >= 0 ? opts.device : opts.localRank;
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess)
    fail(where, ": cudaGetDeviceCount failed: ", cudaGetErrorName(e), ": ", cudaGetErrorString(e));
  if (device < 0 || device >= count)
    fail(where, ": CUDA device ", device, " (from ",
         opts.device >= 0 ? "CommOptions::device" : "LOCAL_RANK", ") does not exist; found ",
         count, " device(s): fewer GPUs than needed (nccl needs one GPU per rank on a host; "
         "--backend gloo --device cuda lets ranks share a GPU)");
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
  // A blocking wait makes Work::wait() honour CommOptions::timeout and throw
  // (naming the op) instead of leaving the timeout to c10d's watchdog, which
  // would tear the process down. Set unless the user chose otherwise.
  setenv("TORCH_NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);

  std::vector<int> globalRanks(worldSize);
  for (int i = 0; i < worldSize; ++i) globalRanks[i] = i;
  try {
    return std::make_shared<NcclCommunicator>("world", rank, std::move(globalRanks), device,
                                              store::prefixed(store, "nccl/world"), opts.timeout, opts.verify);
  } catch (const HarnessError&) {
    throw;
  } catch (const std::exception& ex) {
    std::string what = ex.what();
    fail(where, ": ", what.substr(0, what.find('\n')));
  }
}

}  // namespace moe::comm
