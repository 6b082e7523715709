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
  // Where the communicator's tensors live (the device lane): "cpu" |
  // "cuda"; empty: the backend's default (resolveDeviceType). gloo takes
  // both (CUDA tensors are staged through host memory), nccl only "cuda".
  std::string deviceType;
  // gloo: the network interface name (e.g. "eth0") or the host name/address
  // to bind for multi-host jobs. Empty: loopback (127.0.0.1).
  std::string iface;
  // Gloo/NCCL operation timeout; a collective blocked longer throws.
  std::chrono::milliseconds timeout{std::chrono::seconds(300)};
  // Fingerprint cross-check before each collective (see communicator.h).
  bool verify = true;
  // CUDA device index; -1 means from LOCAL_RANK: LOCAL_RANK itself for
  // nccl (one GPU per rank), LOCAL_RANK modulo the visible devices for gloo
  // (ranks may share a GPU).
  int device = -1;
  int localRank = 0;
};

// Collective over all `worldSize` ranks: each calls it once with its rank and
// a store every rank reaches. The result is named "world".
// Before any collective every rank publishes its (backend, device type) in
// the store and reads every other rank's: ranks that disagree fail with a
// HarnessError naming both ranks and their choices (instead of hanging in
// the rendezvous of two different process groups). Then, for device type
// "cuda", a CUDA this process cannot use is a HarnessError naming the
// missing piece (cudaUsable).
std::shared_ptr<Communicator> createWorld(std::shared_ptr<store::Store> store, int rank,
                                          int worldSize, const CommOptions& opts);

// The device type a backend uses by default: "cuda" for nccl, "cpu" for
// gloo (the default device follows the backend).
std::string defaultDeviceType(const std::string& backend);
// `deviceType` ("" = defaultDeviceType(backend)) validated against the
// backend: "cpu" or "cuda"; nccl with "cpu" is a HarnessError (NCCL moves
// CUDA tensors only).
std::string resolveDeviceType(const std::string& backend, const std::string& deviceType);

// Backends compiled into this binary ("gloo", and "nccl" when built with it).
std::vector<std::string> availableBackends();

// True when the nccl backend can run `worldSize` ranks on this machine
// (compiled in, driver present, enough GPUs); otherwise false with `reason`
// set to a sentence suitable for a test SKIP.
bool ncclUsable(int worldSize, std::string* reason);

// True when this binary can run CUDA tensors on at least `gpus` devices:
// built with CUDA, driver present (cudaGetDeviceCount succeeds), enough
// devices. Otherwise false with `reason` naming the missing piece ("this
// moe-harness was built without CUDA ...", "no usable CUDA driver or
// device: cudaGetDeviceCount failed: ...", "needs 2 GPUs; found 1").
// Probes in a child process (cached), so the caller may still fork ranks.
bool cudaUsable(int gpus, std::string* reason);

}  // namespace moe::comm
