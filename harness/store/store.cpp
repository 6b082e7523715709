#include "harness/store/store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>

// c10d's TCPStore is the one torch/csrc/distributed piece this project uses:
// it keeps our rendezvous wire-compatible with torchrun's store.
#include <c10/util/hash.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "common/error.h"
#include "harness/store/job_store.h"

namespace moe::store {
namespace {

class PrefixStore : public Store {
 public:
  PrefixStore(std::shared_ptr<Store> base, std::string prefix)
      : base_(std::move(base)), prefix_(std::move(prefix) + "/") {}
  void set(const std::string& k, const std::vector<uint8_t>& v) override { base_->set(prefix_ + k, v); }
  std::vector<uint8_t> get(const std::string& k) override { return base_->get(prefix_ + k); }
  int64_t add(const std::string& k, int64_t d) override { return base_->add(prefix_ + k, d); }
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds t) override {
    std::vector<std::string> full;
    for (const auto& k : keys) full.push_back(prefix_ + k);
    base_->wait(full, t);
  }
  std::chrono::milliseconds timeout() const override { return base_->timeout(); }

 private:
  std::shared_ptr<Store> base_;
  std::string prefix_;
};

class TcpStoreImpl : public Store {
 public:
  // listenFd >= 0: a socket already bound and listening, which the server
  // takes over (so it listens on that address only, not on every interface).
  TcpStoreImpl(const TcpStoreOptions& o, int listenFd = -1) : timeout_(o.timeout) {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(o.port);
    opts.isServer = o.isServer;
    if (listenFd >= 0) opts.masterListenFd = listenFd;
    if (o.numWorkers > 0) opts.numWorkers = o.numWorkers;
    opts.waitWorkers = false;
    opts.timeout = o.timeout;
    try {
      store_ = c10::make_intrusive<c10d::TCPStore>(o.host, opts);
    } catch (const std::exception& e) {
      fail("TCP store ", o.isServer ? "server on " : "client of ", o.host, ":", o.port, ": ", e.what());
    }
  }
  int port() const { return store_->getPort(); }
  bool has(const std::string& k) {
    try {
      return store_->check({k});
    } catch (const std::exception& e) {
      fail("TCP store: checking key '", k, "' failed: ", firstLine(e.what()));
    }
  }
  void set(const std::string& k, const std::vector<uint8_t>& v) override { store_->set(k, v); }
  std::vector<uint8_t> get(const std::string& k) override {
    try {
      return store_->get(k);
    } catch (const std::exception& e) {
      fail("TCP store: waiting for key '", k, "' failed after ", timeout_.count(), " ms: ", firstLine(e.what()));
    }
  }
  int64_t add(const std::string& k, int64_t d) override { return store_->add(k, d); }
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds t) override {
    try {
      store_->wait(keys, t);
    } catch (const std::exception& e) {
      fail("TCP store: waiting for ", keys.size(), " key(s) (first '", keys.empty() ? "" : keys[0],
           "') failed: ", firstLine(e.what()));
    }
  }
  std::chrono::milliseconds timeout() const override { return timeout_; }

 private:
  static std::string firstLine(const std::string& s) { return s.substr(0, s.find('\n')); }
  c10::intrusive_ptr<c10d::TCPStore> store_;
  std::chrono::milliseconds timeout_;
};

// One file per key; writes go through a temp file and rename() so readers
// never see a partial value. add() serialises on an flock.
class FileStoreImpl : public Store {
 public:
  FileStoreImpl(std::string dir, std::chrono::milliseconds timeout) : dir_(std::move(dir)), timeout_(timeout) {
    mkdir(dir_.c_str(), 0755);
    struct stat st;
    if (stat(dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) fail("file store: ", dir_, " is not a directory");
  }
  void set(const std::string& k, const std::vector<uint8_t>& v) override {
    std::string path = pathOf(k);
    std::string tmp = path + ".tmp." + std::to_string(getpid());
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size()));
      if (!out) fail("file store: cannot write ", tmp);
    }
    if (rename(tmp.c_str(), path.c_str()) != 0) fail("file store: rename to ", path, ": ", strerror(errno));
  }
  std::vector<uint8_t> get(const std::string& k) override {
    wait({k}, timeout_);
    return readFile(pathOf(k));
  }
  int64_t add(const std::string& k, int64_t d) override {
    std::string lock = dir_ + "/.lock";
    int fd = open(lock.c_str(), O_RDWR | O_CREAT, 0644);
    if (fd < 0) fail("file store: cannot open ", lock);
    flock(fd, LOCK_EX);
    int64_t v = 0;
    std::string path = pathOf(k);
    if (access(path.c_str(), F_OK) == 0) {
      auto bytes = readFile(path);
      v = std::stoll(std::string(bytes.begin(), bytes.end()));
    }
    v += d;
    std::string s = std::to_string(v);
    set(k, std::vector<uint8_t>(s.begin(), s.end()));
    flock(fd, LOCK_UN);
    close(fd);
    return v;
  }
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds t) override {
    auto deadline = std::chrono::steady_clock::now() + t;
    for (const auto& k : keys) {
      while (access(pathOf(k).c_str(), F_OK) != 0) {
        if (std::chrono::steady_clock::now() > deadline)
          fail("file store ", dir_, ": key '", k, "' did not appear within ", t.count(), " ms");
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    }
  }
  std::chrono::milliseconds timeout() const override { return timeout_; }

 private:
  std::string pathOf(const std::string& k) const {
    std::string f;
    for (char c : k) f += (c == '/' ? '%' : c);  // keys may contain '/'
    return dir_ + "/" + f;
  }
  static std::vector<uint8_t> readFile(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  std::string dir_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

std::shared_ptr<Store> prefixed(std::shared_ptr<Store> base, const std::string& prefix) {
  return std::make_shared<PrefixStore>(std::move(base), prefix);
}

std::shared_ptr<Store> makeTcpStore(const TcpStoreOptions& opts, int* boundPort) {
  auto s = std::make_shared<TcpStoreImpl>(opts);
  if (boundPort) *boundPort = s->port();
  return s;
}

std::shared_ptr<Store> makeFileStore(const std::string& dir, std::chrono::milliseconds timeout) {
  return std::make_shared<FileStoreImpl>(dir, timeout);
}

// --- the job's store (job_store.h) -------------------------------------------

namespace {

std::string addressText(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (sa->sa_family == AF_INET) inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, buf, sizeof(buf));
  else if (sa->sa_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, buf, sizeof(buf));
  return buf;
}

// A TCP socket bound to address:port (port 0: a free one) and listening.
int listenOn(const std::string& address, int port, std::string* boundAddress, int* boundPort) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = getaddrinfo(address.c_str(), service.c_str(), &hints, &res); rc != 0)
    fail("TCP store server: cannot use address '", address, "': ", gai_strerror(rc));
  std::string err;
  int fd = -1;
  for (addrinfo* a = res; a && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      err = strerror(errno);
      continue;
    }
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
      err = strerror(errno);
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0) fail("TCP store server: cannot listen on ", address, ":", port, ": ", err);
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  *boundAddress = addressText(reinterpret_cast<sockaddr*>(&ss));
  *boundPort = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                               : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return fd;
}

std::vector<uint8_t> bytesOf(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

void publishToken(Store& s, const std::string& token) {
  if (!token.empty()) s.set(kJobTokenKey, bytesOf(jobTokenDigest(token)));
}

}  // namespace

std::string newJobToken() {
  unsigned char bytes[16];
  std::ifstream in("/dev/urandom", std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(bytes), sizeof(bytes))) fail("cannot read 16 bytes from /dev/urandom for the job token");
  static const char* hex = "0123456789abcdef";
  std::string t;
  for (unsigned char b : bytes) t += {hex[b >> 4], hex[b & 15]};
  return t;
}

std::string jobTokenDigest(const std::string& token) { return c10::sha1(token).str(); }

std::string resolveBindAddress(const std::string& ifaceOrAddress) {
  if (ifaceOrAddress.empty()) return "127.0.0.1";
  if (if_nametoindex(ifaceOrAddress.c_str()) != 0) {
    ifaddrs* ifs = nullptr;
    if (getifaddrs(&ifs) != 0) fail("--iface ", ifaceOrAddress, ": cannot list the network interfaces: ", strerror(errno));
    std::string v4, v6;
    for (ifaddrs* i = ifs; i; i = i->ifa_next) {
      if (!i->ifa_addr || ifaceOrAddress != i->ifa_name) continue;
      if (i->ifa_addr->sa_family == AF_INET && v4.empty()) v4 = addressText(i->ifa_addr);
      if (i->ifa_addr->sa_family == AF_INET6 && v6.empty()) v6 = addressText(i->ifa_addr);
    }
    freeifaddrs(ifs);
    if (!v4.empty()) return v4;
    if (!v6.empty()) return v6;
    fail("--iface ", ifaceOrAddress, ": the interface has no IPv4 or IPv6 address");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(ifaceOrAddress.c_str(), nullptr, &hints, &res); rc != 0 || !res)
    fail("--iface ", ifaceOrAddress, ": neither a network interface nor an address or host name of this machine (",
         gai_strerror(rc), ")");
  std::string a = addressText(res->ai_addr);
  freeaddrinfo(res);
  return a;
}

HostedStore hostJobStore(const JobStoreOptions& o) {
  HostedStore h;
  const int fd = listenOn(resolveBindAddress(o.iface), o.port, &h.address, &h.port);
  TcpStoreOptions so;
  // The server's own client connects to the bound address (any local one
  // for a wildcard bind).
  so.host = (h.address == "0.0.0.0" || h.address == "::") ? "127.0.0.1" : h.address;
  so.port = h.port;
  so.isServer = true;
  so.numWorkers = o.numWorkers;
  so.timeout = o.timeout;
  auto s = std::make_shared<TcpStoreImpl>(so, fd);  // the server owns fd from here
  publishToken(*s, o.jobToken);
  h.store = s;
  return h;
}

std::shared_ptr<Store> connectJobStore(const TcpStoreOptions& opts, const std::string& jobToken,
                                       std::chrono::milliseconds tokenWait) {
  auto s = std::make_shared<TcpStoreImpl>(opts);
  if (jobToken.empty()) return s;
  const std::string where = moe::str("TCP store client of ", opts.host, ":", opts.port, ": refused: ");
  const auto deadline = std::chrono::steady_clock::now() + tokenWait;
  while (!s->has(kJobTokenKey)) {
    if (std::chrono::steady_clock::now() >= deadline)
      fail(where, "the store has no job token, so it is not the store of this job (", kJobTokenEnv,
           " is set: a moe-harness launcher publishes its job's token before any rank connects); is MASTER_ADDR/"
           "MASTER_PORT another program's store, or the port of an earlier job reused?");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const auto got = s->get(kJobTokenKey);
  if (std::string(got.begin(), got.end()) != jobTokenDigest(jobToken))
    fail(where, "job token mismatch: this store belongs to another job (a stale rank of an earlier job whose port "
         "was reused, or a rank given another job's address); ", kJobTokenEnv,
         " must be the token of the job that hosts the store");
  return s;
}

std::shared_ptr<Store> hostRankStore(const TcpStoreOptions& opts, const std::string& jobToken) {
  auto s = std::make_shared<TcpStoreImpl>(opts);
  publishToken(*s, jobToken);
  return s;
}

}  // namespace moe::store
