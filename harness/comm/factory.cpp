#include "harness/comm/factory.h"

#include <ATen/Context.h>

#include "harness/comm/gloo/gloo_communicator.h"
#ifdef MOE_WITH_NCCL
#include "harness/comm/nccl/nccl_communicator.h"
#endif

namespace moe::comm {
namespace {

void checkBackend(const std::string& backend) {
  if (backend != "gloo" && backend != "nccl") fail("unknown backend '", backend, "' (known: gloo, nccl)");
}

std::string describe(const std::string& backend, const std::string& deviceType) {
  return str("backend ", backend, ", device ", deviceType);
}

// Every rank publishes "backend <b>, device <d>" under its rank and reads
// every other rank's, before any process group exists: ranks given
// different choices would otherwise start two different rendezvous (gloo
// and nccl prefixes) or exchange tensors of different devices, and hang or
// fail somewhere far from the cause. Each rank compares all descriptors, so
// every rank reports the same first disagreement.
void agreeOnDeviceLane(store::Store& store, int rank, int worldSize, const std::string& mine) {
  auto key = [](int r) { return str("moe/device_lane/rank", r); };
  store.set(key(rank), std::vector<uint8_t>(mine.begin(), mine.end()));
  std::vector<std::string> all(static_cast<size_t>(worldSize));
  for (int r = 0; r < worldSize; ++r) {
    if (r == rank) {
      all[static_cast<size_t>(r)] = mine;
      continue;
    }
    std::vector<uint8_t> v;
    try {
      v = store.get(key(r));
    } catch (const std::exception& e) {
      std::string what = e.what();
      fail("rank ", rank, ": could not read rank ", r, "'s backend and device from the job's store (",
           what.substr(0, what.find('\n')), ")");
    }
    all[static_cast<size_t>(r)].assign(v.begin(), v.end());
  }
  for (int r = 1; r < worldSize; ++r)
    if (all[static_cast<size_t>(r)] != all[0])
      fail("rank ", rank, ": the ranks disagree on the device lane before the first collective: rank 0 has ", all[0],
           ", rank ", r, " has ", all[static_cast<size_t>(r)],
           " (every rank of a job must be given the same --backend and --device)");
}

// A CUDA lane this process cannot run is the user's error, named before any
// process group is made.
void requireCuda(int rank) {
  std::string why;
  if (!cudaUsable(1, &why))
    fail("rank ", rank, ": device cuda requested (--device cuda, or the nccl backend's default) but CUDA is not "
         "available in this process: ", why);
  if (!at::hasCUDA())
    fail("rank ", rank, ": device cuda requested but CUDA is not available in this process: libtorch's CUDA "
         "runtime (libtorch_cuda) is not loaded although the driver reports a device");
}

}  // namespace

std::string defaultDeviceType(const std::string& backend) { return backend == "nccl" ? "cuda" : "cpu"; }

std::string resolveDeviceType(const std::string& backend, const std::string& deviceType) {
  checkBackend(backend);
  const std::string d = deviceType.empty() ? defaultDeviceType(backend) : deviceType;
  if (d != "cpu" && d != "cuda") fail("unknown device '", d, "' (known: cpu, cuda)");
  if (backend == "nccl" && d == "cpu")
    fail("device cpu with backend nccl: NCCL moves CUDA tensors only (use --backend gloo for CPU, or --device cuda)");
  return d;
}

std::shared_ptr<Communicator> createWorld(std::shared_ptr<store::Store> store, int rank, int worldSize,
                                          const CommOptions& opts) {
  CommOptions o = opts;
  o.deviceType = resolveDeviceType(opts.backend, opts.deviceType);
  // (An impossible rank or world size is left to the backend's own error.)
  if (store != nullptr && worldSize > 1 && rank >= 0 && rank < worldSize)
    agreeOnDeviceLane(*store, rank, worldSize, describe(o.backend, o.deviceType));
  if (o.backend == "nccl") {
#ifdef MOE_WITH_NCCL
    requireCuda(rank);
    return createNcclWorld(std::move(store), rank, worldSize, o);
#else
    fail("backend 'nccl' is not compiled into this binary (configure found no libtorch with CUDA and NCCL)");
#endif
  }
  if (o.deviceType == "cuda") requireCuda(rank);
  return createGlooWorld(std::move(store), rank, worldSize, o);
}

std::vector<std::string> availableBackends() {
#ifdef MOE_WITH_NCCL
  return {"gloo", "nccl"};
#else
  return {"gloo"};
#endif
}

bool ncclUsable(int worldSize, std::string* reason) {
#ifdef MOE_WITH_NCCL
  return ncclUsableImpl(worldSize, reason);
#else
  if (reason) *reason = "nccl backend not compiled in (no libtorch with CUDA and NCCL at configure time)";
  return false;
#endif
}

bool cudaUsable(int gpus, std::string* reason) {
#ifdef MOE_WITH_NCCL
  return cudaUsableImpl(gpus, reason);
#else
  if (reason)
    *reason = "this moe-harness was built without CUDA (configure found no libtorch with CUDA and NCCL)";
  return false;
#endif
}

}  // namespace moe::comm
