#pragma once
// Creates the world communicator of a rank for a named backend.
#include <chrono>
#include <memory>
#include <string>

#include "harness/comm/communicator.h"
#include "harness/store/store.h"

namespace moe::comm {

struct CommOptions {
  std::string backend = "gloo";  // "gloo" | "nccl"
  // gloo: the network interface name (e.g. "eth0") or the host name/address
  // to bind for multi-host jobs. Empty: loopback (127.0.0.1).
  std::string iface;
  // Gloo/NCCL operation timeout; a collective blocked longer throws.
  std::chrono::milliseconds timeout{std::chrono::seconds(300)};
  // Fingerprint cross-check before each collective (see communicator.h).
  bool verify = true;
  // nccl: CUDA device index; -1 means LOCAL_RANK.
  int device = -1;
  int localRank = 0;
};

// Collective over all `worldSize` ranks: each calls it once with its rank and
// a store every rank reaches. The result is named "world".
std::shared_ptr<Communicator> createWorld(std::shared_ptr<store::Store> store, int rank,
                                          int worldSize, const CommOptions& opts);

// Backends compiled into this binary ("gloo", and "nccl" when built with it).
std::vector<std::string> availableBackends();

// True when the nccl backend can run `worldSize` ranks on this machine
// (compiled in, driver present, enough GPUs); otherwise false with `reason`
// set to a sentence suitable for a test SKIP.
bool ncclUsable(int worldSize, std::string* reason);

}  // namespace moe::comm
