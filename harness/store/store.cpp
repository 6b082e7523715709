#include "harness/store/store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>

// c10d's TCPStore is the one torch/csrc/distributed piece this project uses:
// it keeps our rendezvous wire-compatible with torchrun's store.
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "common/error.h"

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
  TcpStoreImpl(const TcpStoreOptions& o) : timeout_(o.timeout) {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(o.port);
    opts.isServer = o.isServer;
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

}  // namespace moe::store
