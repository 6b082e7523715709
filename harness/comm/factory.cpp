#include "harness/comm/factory.h"

#include "harness/comm/gloo/gloo_communicator.h"
#ifdef MOE_WITH_NCCL
#include "harness/comm/nccl/nccl_communicator.h"
#endif

namespace moe::comm {

std::shared_ptr<Communicator> createWorld(std::shared_ptr<store::Store> store, int rank, int worldSize,
                                          const CommOptions& opts) {
  if (opts.backend == "gloo") return createGlooWorld(std::move(store), rank, worldSize, opts);
  if (opts.backend == "nccl") {
#ifdef MOE_WITH_NCCL
    return createNcclWorld(std::move(store), rank, worldSize, opts);
#else
    fail("backend 'nccl' is not compiled into this binary (configure found no libtorch with CUDA and NCCL)");
#endif
  }
  fail("unknown backend '", opts.backend, "' (known: gloo, nccl)");
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

}  // namespace moe::comm
