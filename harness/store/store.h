#pragma once
// Key-value store used for rendezvous (gloo pair addresses, NCCL unique ids,
// launcher bookkeeping).
//
// Contract: set() overwrites; get() blocks until the key exists or the
// store's timeout expires (then throws HarnessError naming the key);
// add() atomically adds to an integer counter and returns the new value.
// Implementations must be usable from several processes at once.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moe::store {

class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<uint8_t>& value) = 0;
  virtual std::vector<uint8_t> get(const std::string& key) = 0;
  virtual int64_t add(const std::string& key, int64_t delta) = 0;
  virtual void wait(const std::vector<std::string>& keys,
                    std::chrono::milliseconds timeout) = 0;
  virtual std::chrono::milliseconds timeout() const = 0;
};

// Every key is prefixed with `prefix/`; used to give each group its own
// namespace in one store.
std::shared_ptr<Store> prefixed(std::shared_ptr<Store> base, const std::string& prefix);

struct TcpStoreOptions {
  std::string host = "127.0.0.1";
  int port = 0;             // 0 with isServer: pick a free port
  bool isServer = false;
  int numWorkers = -1;      // -1: unknown
  std::chrono::milliseconds timeout{std::chrono::seconds(300)};
};

// TCP store wire-compatible with torchrun's (c10d TCPStore). With isServer
// and port 0 the server binds a free port, returned in *boundPort.
std::shared_ptr<Store> makeTcpStore(const TcpStoreOptions& opts, int* boundPort = nullptr);

// Store backed by files in a shared directory (no network needed).
std::shared_ptr<Store> makeFileStore(const std::string& dir, std::chrono::milliseconds timeout);

}  // namespace moe::store
