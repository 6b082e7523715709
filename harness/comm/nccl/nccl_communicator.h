#pragma once
// NCCL backend of the Communicator: libtorch's c10d::ProcessGroupNCCL (so
// the process maps only the NCCL that libtorch links) under the harness's
// C10dCommunicator (see ../c10d_communicator.h for the op mapping and
// ../communicator.h for the contract every backend shares). NCCL-specific:
//
//  - Tensors must be CUDA tensors on this communicator's device (the one
//    selected at creation); anything else throws HarnessError naming the
//    backend, the op and the tensor's device.
//  - Synchronous: after c10d's Work completes, the current CUDA stream of
//    the device is synchronised, so the output is ready when a call returns.
//  - Timeouts: TORCH_NCCL_BLOCKING_WAIT=1 (set unless already set) makes a
//    collective blocked longer than CommOptions::timeout throw, naming the
//    op, instead of c10d's watchdog ending the process.
//  - split() creates a new ProcessGroupNCCL per group over the job's store
//    (prefix "nccl/<name>/<index>"); non-members take no part.
#include <chrono>
#include <memory>
#include <string>

#include "harness/comm/communicator.h"
#include "harness/comm/factory.h"
#include "harness/store/store.h"

namespace moe::comm {

// Creates the world NCCL communicator of `rank` (collective over all
// `worldSize` ranks) over `store` (c10d rendezvous under the prefix
// "nccl/world"). Selects CUDA device opts.device, or opts.localRank when
// opts.device is -1.
std::shared_ptr<Communicator> createNcclWorld(std::shared_ptr<store::Store> store, int rank,
                                              int worldSize, const CommOptions& opts);

// True when cudaGetDeviceCount succeeds and reports at least `worldSize`
// devices; otherwise false with `reason` (may be null) set to a sentence for
// a test SKIP, e.g. "nccl backend needs 4 GPUs; cudaGetDeviceCount failed:
// no CUDA-capable device is detected".
//
// The probe runs in a short-lived child process and its result is cached, so
// the calling process does not initialise CUDA: ranks forked from it later
// can still use their GPUs (CUDA does not survive fork()).
bool ncclUsableImpl(int worldSize, std::string* reason);

// The same probe for the CUDA device lane (comm::cudaUsable): true when at
// least `gpus` devices are usable, else false with `reason` naming the
// missing piece ("no usable CUDA driver or device: ...", "fewer GPUs than
// needed: ...").
bool cudaUsableImpl(int gpus, std::string* reason);

}  // namespace moe::comm
