#include "harness/launch/fork_server.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <mutex>

#include "common/error.h"

namespace moe::launch {
namespace {

constexpr uint32_t kMagic = 0x4d4f4546;  // "MOEF"
constexpr int kNumFds = 3;

struct Header {
  uint32_t magic;
  uint32_t payloadBytes;
};

// One request's first message: the header as data, room for the fds as
// SCM_RIGHTS control data. Not copyable: msg points into it.
struct HeaderMessage {
  Header h{};
  char control[CMSG_SPACE(sizeof(int) * kNumFds)] = {};
  iovec iov{&h, sizeof(h)};
  msghdr msg{};
  HeaderMessage() {
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
  }
  HeaderMessage(const HeaderMessage&) = delete;
  HeaderMessage& operator=(const HeaderMessage&) = delete;
};

// The launcher's side; the server and the ranks never touch it (their copy
// of the socket is the other end).
struct ClientState {
  std::mutex mu;  // one request at a time: launcher threads share the server
  int sock = -1;
  pid_t server = -1;
  std::string program;
  std::string unavailable = "not started";
};
ClientState& client() {
  static ClientState s;
  return s;
}

std::string canonical(const std::string& path) {
  std::error_code ec;
  auto p = std::filesystem::weakly_canonical(path, ec);
  return ec ? path : p.string();
}

bool writeAll(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool readAll(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// Payload: NUL-terminated strings: launcher pid, cwd, argc, argv..., envc, env...
void putString(std::string& out, const std::string& s) {
  out += s;
  out += '\0';
}

struct Request {
  pid_t launcher = 0;
  std::string cwd;
  std::vector<std::string> argv, env;
  int fds[kNumFds] = {-1, -1, -1};
};

bool parsePayload(const std::string& payload, Request& req) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t i = 0; i < payload.size(); ++i)
    if (payload[i] == '\0') {
      parts.emplace_back(payload, start, i - start);
      start = i + 1;
    }
  size_t k = 0;
  auto next = [&](std::string& s) {
    if (k >= parts.size()) return false;
    s = parts[k++];
    return true;
  };
  std::string pid, n;
  if (!next(pid) || !next(req.cwd) || !next(n)) return false;
  req.launcher = static_cast<pid_t>(std::atol(pid.c_str()));
  req.argv.resize(static_cast<size_t>(std::atol(n.c_str())));
  for (auto& a : req.argv)
    if (!next(a)) return false;
  if (!next(n)) return false;
  req.env.resize(static_cast<size_t>(std::atol(n.c_str())));
  for (auto& e : req.env)
    if (!next(e)) return false;
  return !req.argv.empty();
}

// The server's side: one request with its three fds; false at EOF or on a
// malformed message (the launcher is gone or broken: the server exits).
bool receiveRequest(int sock, Request& req) {
  HeaderMessage m;
  Header& h = m.h;
  msghdr& msg = m.msg;
  ssize_t got;
  do got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (got < 0 && errno == EINTR);
  if (got <= 0) return false;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int) * kNumFds))
      std::memcpy(req.fds, CMSG_DATA(c), sizeof(int) * kNumFds);
  if (got < static_cast<ssize_t>(sizeof(h)) &&
      !readAll(sock, reinterpret_cast<char*>(&h) + got, sizeof(h) - static_cast<size_t>(got)))
    return false;
  if (h.magic != kMagic || req.fds[0] < 0) return false;
  std::string payload(h.payloadBytes, '\0');
  return readAll(sock, payload.data(), payload.size()) && parsePayload(payload, req);
}

// In the forked rank; never returns.
[[noreturn]] void runRank(Request& req, ForkedMain entry) {
  setpgid(0, 0);
  dup2(req.fds[0], STDOUT_FILENO);
  dup2(req.fds[1], STDERR_FILENO);
  close(req.fds[0]);
  close(req.fds[1]);
  // The environment first: readStoreAddressLine sets MASTER_* on top of it.
  clearenv();
  for (auto& e : req.env) {
    const auto eq = e.find('=');
    if (eq != std::string::npos) setenv(e.substr(0, eq).c_str(), e.c_str() + eq + 1, 1);
  }
  const bool haveAddress = readStoreAddressLine(req.fds[2]);
  close(req.fds[2]);
  if (!haveAddress) _exit(112);  // launcher could not start the store, or died
  // Only now: the server's child that forked us has exited and we are the
  // launcher's child (forkRankViaServer waited for it). Set earlier, the
  // death signal would fire at that re-parenting.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != req.launcher) _exit(111);  // the launcher died before prctl
  if (chdir(req.cwd.c_str()) != 0) {
    fprintf(stderr, "launch: cannot enter %s: %s\n", req.cwd.c_str(), strerror(errno));
    _exit(127);
  }
  std::vector<char*> args;
  for (auto& a : req.argv) args.push_back(a.data());
  args.push_back(nullptr);
  const int code = entry(static_cast<int>(req.argv.size()), args.data());
  // _exit, not exit: static destructors (libtorch's operator registry alone
  // takes ~0.2 s to tear down) are useless work in a process that ends now;
  // what a rank leaves behind (results, traces, failure records) is written
  // and closed before its command returns. Only buffered output is pending.
  std::cout.flush();
  std::cerr.flush();
  fflush(nullptr);
  _exit(code);
}

// The server's loop (single-threaded for its whole life).
[[noreturn]] void serve(int sock, ForkedMain entry) {
  for (;;) {
    Request req;
    if (!receiveRequest(sock, req)) _exit(0);
    int pidPipe[2];
    int32_t reply = 0;
    if (pipe2(pidPipe, O_CLOEXEC) != 0) {
      reply = -errno;
    } else {
      const pid_t mid = fork();
      if (mid == 0) {
        // The intermediate: fork the rank, name it, exit so that the rank is
        // re-parented to the launcher (the subreaper).
        close(pidPipe[0]);
        const pid_t rank = fork();
        if (rank == 0) {
          close(pidPipe[1]);
          close(sock);
          runRank(req, entry);
        }
        int32_t v = rank < 0 ? -errno : rank;
        if (rank > 0) setpgid(rank, rank);  // before the launcher can signal the group
        if (write(pidPipe[1], &v, sizeof(v)) < 0) {}
        _exit(0);
      }
      close(pidPipe[1]);
      if (mid < 0) {
        reply = -errno;
      } else if (!readAll(pidPipe[0], &reply, sizeof(reply))) {
        reply = -EIO;
      }
      close(pidPipe[0]);
      if (mid > 0) {
        int status;
        while (waitpid(mid, &status, 0) < 0 && errno == EINTR) {}
      }
    }
    for (int fd : req.fds)
      if (fd >= 0) close(fd);
    if (!writeAll(sock, &reply, sizeof(reply))) _exit(0);
  }
}

}  // namespace

int countThreads() {
  DIR* d = opendir("/proc/self/task");
  if (!d) return -1;
  int n = 0;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') ++n;
  closedir(d);
  return n;
}

bool startForkServer(const std::string& program, ForkedMain entry, std::string* why) {
  auto& c = client();
  std::lock_guard<std::mutex> lock(c.mu);
  auto refuse = [&](std::string reason) {
    if (c.sock < 0) c.unavailable = reason;
    if (why) *why = std::move(reason);
    return false;
  };
  if (c.sock >= 0) return refuse("a fork server runs already");
  const int threads = countThreads();
  if (threads != 1)
    return refuse(moe::str("this process has ", threads,
                           " threads; fork() is only safe with one, so ranks are exec'd"));
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) return refuse(moe::str("PR_SET_CHILD_SUBREAPER: ", strerror(errno)));
  int sv[2];
  // SOCK_CLOEXEC: programs exec'd by this process never hold the server's socket.
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return refuse(moe::str("socketpair: ", strerror(errno)));
  fflush(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(sv[0]);
    close(sv[1]);
    return refuse(moe::str("fork: ", strerror(errno)));
  }
  if (pid == 0) {
    close(sv[0]);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(0);
    // SIGPIPE keeps the disposition of moe-harness's main (ignored), which
    // the ranks inherit as exec'd ones do; the server's own writes use
    // MSG_NOSIGNAL in any case.
    serve(sv[1], entry);
  }
  close(sv[1]);
  c.sock = sv[0];
  c.server = pid;
  c.program = canonical(program);
  c.unavailable.clear();
  return true;
}

void stopForkServer() {
  auto& c = client();
  std::lock_guard<std::mutex> lock(c.mu);
  if (c.sock < 0) return;
  close(c.sock);
  c.sock = -1;
  int status;
  while (waitpid(c.server, &status, 0) < 0 && errno == EINTR) {}
  c.server = -1;
  c.unavailable = "stopped";
}

bool forkServerRunning() {
  auto& c = client();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.sock >= 0;
}

bool forkServerServes(const std::string& program) {
  auto& c = client();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.sock >= 0 && canonical(program) == c.program;
}

std::string forkServerUnavailableReason() {
  auto& c = client();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.unavailable;
}

pid_t forkRankViaServer(const ForkedRankSpec& spec) {
  MOE_ASSERT(!spec.argv.empty(), "forkRankViaServer: empty argv");
  std::string payload;
  putString(payload, std::to_string(getpid()));
  putString(payload, spec.cwd);
  putString(payload, std::to_string(spec.argv.size()));
  for (const auto& a : spec.argv) putString(payload, a);
  putString(payload, std::to_string(spec.env.size()));
  for (const auto& e : spec.env) putString(payload, e);

  auto& c = client();
  std::lock_guard<std::mutex> lock(c.mu);
  if (c.sock < 0) fail("launch: no fork server runs (", c.unavailable, ")");
  HeaderMessage m;
  m.h = {kMagic, static_cast<uint32_t>(payload.size())};
  const int fds[kNumFds] = {spec.outFd, spec.errFd, spec.portFd};
  cmsghdr* cm = CMSG_FIRSTHDR(&m.msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(fds));
  std::memcpy(CMSG_DATA(cm), fds, sizeof(fds));
  ssize_t sent;
  do sent = sendmsg(c.sock, &m.msg, MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  int32_t reply = 0;
  // A short sendmsg of 8 bytes on a local stream socket does not happen; treat it as a dead server.
  if (sent != static_cast<ssize_t>(sizeof(m.h)) || !writeAll(c.sock, payload.data(), payload.size()) ||
      !readAll(c.sock, &reply, sizeof(reply))) {
    const int err = errno;
    close(c.sock);
    c.sock = -1;
    c.unavailable = moe::str("the fork server (pid ", c.server, ") stopped answering: ", strerror(err));
    fail("launch: ", c.unavailable);
  }
  if (reply <= 0) fail("launch: the fork server could not fork a rank: ", strerror(-reply));
  return static_cast<pid_t>(reply);
}

bool readStoreAddressLine(int fd) {
  // "ADDRESS PORT" arrives as one line; stop at the newline rather than at EOF.
  char buf[128] = {};
  ssize_t n = 0, got = 0;
  while (got < static_cast<ssize_t>(sizeof(buf)) - 1 && !memchr(buf, '\n', static_cast<size_t>(got)) &&
         ((n = read(fd, buf + got, sizeof(buf) - 1 - static_cast<size_t>(got))) > 0 || (n < 0 && errno == EINTR)))
    if (n > 0) got += n;
  if (got <= 0) return false;
  const char* space = strchr(buf, ' ');
  if (!space) return false;
  setenv("MASTER_PORT", std::to_string(std::atoi(space + 1)).c_str(), 1);
  setenv("MASTER_ADDR", std::string(static_cast<const char*>(buf), space).c_str(), 1);
  return true;
}

}  // namespace moe::launch
