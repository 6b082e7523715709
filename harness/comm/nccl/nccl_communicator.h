#pragma once
// NCCL backend of the Communicator (see ../communicator.h for the contract
// every backend shares; this file only states what is NCCL-specific).
//
//  - Tensors must be contiguous CUDA tensors on this communicator's device
//    (the one selected at creation); anything else throws HarnessError naming
//    the backend, the op and the tensor's device.
//  - Synchronous: each op is enqueued on a stream owned by the communicator
//    and waited for before the call returns. That stream is a *blocking*
//    stream, so CUDA orders it after work already queued on the legacy
//    default stream (torch's default stream) and vice versa. Inputs produced
//    on another stream must be synchronised by the caller first.
//  - Timeouts: communicators are created non-blocking (ncclConfig_t
//    blocking = 0) and every wait polls the stream and
//    ncclCommGetAsyncError. When CommOptions::timeout expires, or NCCL
//    reports an asynchronous error, the communicator is aborted
//    (ncclCommAbort) and the op throws; every later op on it throws too.
//  - Uneven allGather is a group of ncclBroadcast calls (one per rank block,
//    straight into its offset of `out`); uneven reduceScatter is a group of
//    ncclReduce calls (block r reduced to root r, straight into `out`). Equal
//    sizes use ncclAllGather / ncclReduceScatter.
//  - allToAllSingle is a group of per-peer ncclSend/ncclRecv (self included).
//  - split() is ncclCommSplit (color = group index, key = position in the
//    group's rank list; NCCL_SPLIT_NOCOLOR on non-members).
//  - Every NCCL and CUDA status is checked at its call site; failures throw
//    HarnessError naming the rank, the communicator, the call and NCCL's /
//    CUDA's error text.
#include <chrono>
#include <memory>
#include <string>

#include "harness/comm/communicator.h"
#include "harness/comm/factory.h"
#include "harness/store/store.h"

namespace moe::comm {

// Creates the world NCCL communicator of `rank` (collective over all
// `worldSize` ranks). Rank 0 calls ncclGetUniqueId and publishes it in
// `store`; the others read it. The store must be fresh (or prefixed) per
// call: the key is fixed. Selects CUDA device opts.device, or
// opts.localRank when opts.device is -1, with cudaSetDevice.
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

}  // namespace moe::comm
