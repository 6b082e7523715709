#pragma once
// Gloo backend: CPU tensors over libtorch's own Gloo, through
// c10d::ProcessGroupGloo (TCP transport; loopback by default,
// CommOptions::iface for multi-host). See communicator.h for the contract
// and c10d_communicator.h for how each op maps onto the process group.
// With CommOptions::deviceType "cuda" its tensors live on the rank's GPU
// (LOCAL_RANK modulo the visible devices, so ranks may share one): each op
// stages them through host memory and copies the results back.
//
// One process group per communicator: the world's rendezvous under the
// store prefix "gloo/world", a sub-group's under "gloo/<name>/<index>";
// all of a rank's groups share one TCP device. Each group runs its ops on
// one worker thread of its own (ops are synchronous anyway).
#include <memory>

#include "harness/comm/factory.h"

namespace moe::comm {

std::shared_ptr<Communicator> createGlooWorld(std::shared_ptr<store::Store> store, int rank, int worldSize,
                                              const CommOptions& opts);

}  // namespace moe::comm
