#pragma once
// The job's rendezvous store as the launcher hosts it, and a rank's
// connection to it (issue 17 point 5: a rendezvous nobody else can join).
//
// Contract:
//  - hostJobStore() listens on exactly one address: loopback (127.0.0.1)
//    unless an interface or address is chosen (resolveBindAddress), so no
//    other host can reach a job's store by default. The address and port it
//    bound are returned (read back from the socket).
//  - Every job has a random token (newJobToken(): 128 bits from
//    /dev/urandom). The host publishes its SHA-1 under kJobTokenKey before
//    any rank learns the port. A client given a token (connectJobStore, the
//    ranks read MOE_HARNESS_JOB_TOKEN) checks it before it reads or writes
//    any other key and refuses a store whose token differs or that has none:
//    HarnessError "TCP store client of ADDR:PORT: refused: ...", naming the
//    problem (a stale rank of an earlier job whose port was reused, or a
//    rank given another job's address).
//  - What the token is not: authentication against a hostile process on the
//    same host. c10d's store protocol (which keeps us torchrun-compatible)
//    has none, so the refusal happens in our client; loopback binding is
//    what keeps other hosts out.
#include <chrono>
#include <memory>
#include <string>

#include "harness/store/store.h"

namespace moe::store {

inline constexpr const char* kJobTokenEnv = "MOE_HARNESS_JOB_TOKEN";
// The key holding the SHA-1 (hex) of the job's token.
inline constexpr const char* kJobTokenKey = "moe-harness/job-token-sha1";

// 32 hex digits (128 bits) from /dev/urandom; HarnessError when it cannot be read.
std::string newJobToken();
// The SHA-1 of a token, as hex.
std::string jobTokenDigest(const std::string& token);

// The numeric address to bind for `ifaceOrAddress`: "" -> 127.0.0.1; a
// network interface name (eth0) -> its IPv4 address (else its IPv6 one); a
// numeric address as given; a host name -> its first address. HarnessError
// naming the interface or host when nothing fits.
std::string resolveBindAddress(const std::string& ifaceOrAddress);

struct JobStoreOptions {
  std::string iface;  // interface name or address to listen on; "" = loopback
  int port = 0;       // 0: a free port
  int numWorkers = -1;
  std::string jobToken;  // published as its digest when not empty
  std::chrono::milliseconds timeout{std::chrono::seconds(300)};
};

struct HostedStore {
  std::shared_ptr<Store> store;  // the server (also a client of itself)
  std::string address;           // the address the socket is bound to (getsockname)
  int port = 0;
};

HostedStore hostJobStore(const JobStoreOptions& opts);

// makeTcpStore(opts) as a client, then the token check (see the contract)
// when `jobToken` is not empty: the digest must be there within `tokenWait`
// (0: at once, as with the launcher, which publishes it before handing out
// the port; a rank-0-hosted store publishes it after its clients may connect).
std::shared_ptr<Store> connectJobStore(const TcpStoreOptions& opts, const std::string& jobToken,
                                       std::chrono::milliseconds tokenWait = std::chrono::milliseconds(0));

// A rank-0-hosted store (torchrun's env:// without an agent store) that also
// publishes the token: makeTcpStore(opts) as a server, then the digest.
std::shared_ptr<Store> hostRankStore(const TcpStoreOptions& opts, const std::string& jobToken);

}  // namespace moe::store
