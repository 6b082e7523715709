// The job's rendezvous store (harness/store/job_store.h): it listens on
// loopback by default, as the kernel's own socket table shows, and a client
// with another job's token is refused with a message naming the problem,
// while the right token works.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "common/error_of.h"
#include "harness/store/job_store.h"

using namespace moe;
using ::moe::testutil::errorOf;

namespace {

// The local address of the socket listening on `port`, as /proc/net/tcp
// lists it ("0100007F" is 127.0.0.1), or "" when none listens there (IPv4).
std::string listeningAddressInProc(int port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string slot, local, remote, state;
    ls >> slot >> local >> remote >> state;
    const auto colon = local.find(':');
    if (state == "0A" && std::stoi(local.substr(colon + 1), nullptr, 16) == port) return local.substr(0, colon);
  }
  return "";
}

bool tcp6Listens(int port) {
  std::ifstream in("/proc/net/tcp6");
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string slot, local, remote, state;
    ls >> slot >> local >> remote >> state;
    const auto colon = local.find(':');
    if (state == "0A" && std::stoi(local.substr(colon + 1), nullptr, 16) == port) return true;
  }
  return false;
}

// A non-loopback IPv4 address of this machine, or "".
std::string externalIPv4() {
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0) return "";
  std::string found;
  for (ifaddrs* i = ifs; i && found.empty(); i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof(buf));
    if (std::string(buf).rfind("127.", 0) != 0) found = buf;
  }
  freeifaddrs(ifs);
  return found;
}

bool canConnect(const std::string& addr, int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, addr.c_str(), &sa.sin_addr);
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
  close(fd);
  return ok;
}

store::JobStoreOptions jobStore(const std::string& token) {
  store::JobStoreOptions o;
  o.jobToken = token;
  o.timeout = std::chrono::seconds(2);  // c10d counts connect timeouts in whole seconds
  return o;
}

store::TcpStoreOptions clientOf(const store::HostedStore& h) {
  store::TcpStoreOptions c;
  c.host = h.address;
  c.port = h.port;
  c.timeout = std::chrono::seconds(2);
  return c;
}

TEST(JobStore, ListensOnLoopbackOnlyByDefault) {
  auto h = store::hostJobStore(jobStore(store::newJobToken()));
  ASSERT_GT(h.port, 0);
  EXPECT_EQ(h.address, "127.0.0.1");
  // The kernel's view, not ours: the one listening socket on the port is
  // bound to 127.0.0.1, and nothing listens on it over IPv6 (no [::]).
  EXPECT_EQ(listeningAddressInProc(h.port), "0100007F");
  EXPECT_FALSE(tcp6Listens(h.port));
  EXPECT_TRUE(canConnect("127.0.0.1", h.port));
  const std::string ext = externalIPv4();
  if (!ext.empty()) {
    EXPECT_FALSE(canConnect(ext, h.port)) << "the store is reachable on " << ext;
  }
}

TEST(JobStore, ChosenInterfaceOrAddressIsBound) {
  EXPECT_EQ(store::resolveBindAddress(""), "127.0.0.1");
  EXPECT_EQ(store::resolveBindAddress("lo"), "127.0.0.1");
  EXPECT_EQ(store::resolveBindAddress("127.0.0.2"), "127.0.0.2");
  auto o = jobStore("");
  o.iface = "lo";
  EXPECT_EQ(store::hostJobStore(o).address, "127.0.0.1");
}

TEST(JobStore, ATokenIs128RandomBitsAndOnlyItsDigestIsPublished) {
  const std::string a = store::newJobToken(), b = store::newJobToken();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos) << a;
  EXPECT_NE(a, b);
  auto h = store::hostJobStore(jobStore(a));
  const auto digest = h.store->get(store::kJobTokenKey);
  EXPECT_EQ(std::string(digest.begin(), digest.end()), store::jobTokenDigest(a));
  EXPECT_EQ(std::string(digest.begin(), digest.end()).find(a), std::string::npos);
}

TEST(JobStore, AClientWithAnotherJobsTokenIsRefusedTheRightOneWorks) {
  const std::string token = store::newJobToken();
  auto h = store::hostJobStore(jobStore(token));
  const std::string err = errorOf([&] { store::connectJobStore(clientOf(h), store::newJobToken()); });
  EXPECT_NE(err.find("TCP store client of 127.0.0.1:" + std::to_string(h.port) + ": refused: job token mismatch: this "
                     "store belongs to another job"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("MOE_HARNESS_JOB_TOKEN"), std::string::npos) << err;
  auto ok = store::connectJobStore(clientOf(h), token);
  ok->set("k", {1, 2});
  EXPECT_EQ(h.store->get("k"), (std::vector<uint8_t>{1, 2}));
}

TEST(JobStore, ATokenedClientRefusesAStoreWithoutAToken) {
  // Another program's store on the port (or an old launcher's): no token.
  int port = 0;
  store::TcpStoreOptions so;
  so.isServer = true;
  so.timeout = std::chrono::seconds(2);
  auto plain = store::makeTcpStore(so, &port);
  store::TcpStoreOptions c;
  c.port = port;
  c.timeout = std::chrono::seconds(2);
  const std::string err = errorOf([&] { store::connectJobStore(c, store::newJobToken()); });
  EXPECT_NE(err.find("refused: the store has no job token, so it is not the store of this job"), std::string::npos)
      << err;
}

}  // namespace
