#pragma once
// Gloo backend: CPU tensors over Gloo's TCP transport (loopback by default,
// CommOptions::iface for multi-host). See communicator.h for the contract.
//
// How each op maps onto Gloo:
//  - all_reduce: gloo::allreduce with a reduce function of the tensor's dtype
//    (bfloat16/float16 sums round after each addition, as NCCL's do); avg is
//    the sum divided by the group size in the same dtype.
//  - broadcast, all_gather (gloo::allgatherv, uneven allowed), all_to_all
//    (gloo::alltoallv): byte copies, dtype-agnostic.
//  - reduce_scatter: Gloo has only an old-style algorithm class for it, so it
//    is an alltoallv of the blocks followed by a local reduction in rank
//    order (same (n-1)/n volume as a ring reduce-scatter, deterministic).
//  - send/recv: unbound buffers on one slot per pair (FIFO).
#include <memory>

#include "harness/comm/factory.h"

namespace moe::comm {

std::shared_ptr<Communicator> createGlooWorld(std::shared_ptr<store::Store> store, int rank, int worldSize,
                                              const CommOptions& opts);

}  // namespace moe::comm
