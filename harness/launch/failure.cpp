#include "harness/launch/failure.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <sstream>

namespace moe::launch {
namespace {

struct Pattern {
  const char* text;
  const char* cls;
};

// Messages a rank raises because a peer died, is gone or closed its
// connection. Only transport and store texts: a user error of ours never
// contains them (harness_unit_tests checks the project's user errors).
// Order matters: the first match names the class.
const Pattern kSecondaryPatterns[] = {
    // Gloo's TCP pair ("[.../gloo/transport/tcp/pair.cc:N] Connection closed by peer [ADDR]:PORT").
    {"Connection closed by peer", "peer_gone"},
    // ECONNRESET / EPIPE / ECONNREFUSED as strerror words them (Gloo, c10d sockets).
    {"Connection reset by peer", "peer_gone"},
    {"Connection reset", "peer_gone"},
    {"Broken pipe", "peer_gone"},
    {"Connection refused", "peer_gone"},
    // NCCL's ncclRemoteError.
    {"remote process exited", "peer_gone"},
    {"ncclRemoteError", "peer_gone"},
    // c10d: "ProcessGroupNCCL ... has been aborted", "Process group ... was aborted".
    {"has been aborted", "aborted"},
    {"was aborted", "aborted"},
    // c10d's TCPStore client ("Socket Timeout"), our stores' waits.
    {"Socket Timeout", "store_timeout"},
    {"TCP store: waiting for", "store_timeout"},
    {"did not appear within", "store_timeout"},
    // Gloo ("Timed out waiting 30000ms for recv operation to complete"),
    // NCCL's watchdog.
    {"Timed out waiting", "peer_timeout"},
    {"Watchdog caught collective operation timeout", "peer_timeout"},
};

std::string recordPath(const std::string& dir, int rank) {
  return dir + "/rank" + std::to_string(rank) + ".failure.json";
}

std::string clip(const std::string& s, size_t n) { return s.size() <= n ? s : s.substr(0, n) + "..."; }

}  // namespace

double wallNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string classifyError(const std::string& message) {
  for (const auto& p : kSecondaryPatterns)
    if (message.find(p.text) != std::string::npos) return p.cls;
  return "";
}

bool isSecondaryClass(const std::string& cls) {
  return cls == "peer_gone" || cls == "aborted" || cls == "store_timeout" || cls == "peer_timeout" ||
         cls == "stopped";
}

void recordRankFailure(const std::string& kind, const std::string& message) {
  try {
    const char* dir = std::getenv(kTraceDirEnv);
    const char* rank = std::getenv("RANK");
    if (!dir || !*dir || !rank || !*rank) return;
    const int r = std::atoi(rank);
    nlohmann::json j = {{"rank", r}, {"kind", kind}, {"error", message}, {"time", wallNow()}, {"pid", getpid()}};
    // Written whole, then renamed: the launcher may read it at any moment.
    const std::string path = recordPath(dir, r);
    const std::string tmp = path + ".tmp";
    {
      std::ofstream out(tmp);
      out << j.dump() << "\n";
      if (!out) return;
    }
    std::rename(tmp.c_str(), path.c_str());
  } catch (...) {
    // A rank reporting its error must not fail on the report.
  }
}

std::optional<RankFailureRecord> readRankFailureRecord(const std::string& traceDir, int rank) {
  std::ifstream in(recordPath(traceDir, rank));
  if (!in) return std::nullopt;
  try {
    nlohmann::json j;
    in >> j;
    RankFailureRecord r;
    r.rank = j.value("rank", rank);
    r.kind = j.value("kind", "");
    r.message = j.value("error", "");
    r.time = j.value("time", 0.0);
    return r;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

void clearRankFailureRecords(const std::string& traceDir, int worldSize) {
  for (int r = 0; r < worldSize; ++r) std::remove(recordPath(traceDir, r).c_str());
}

nlohmann::json RankFailure::toJson() const {
  return {{"rank", rank}, {"class", cls}, {"error", error}, {"time", time}};
}

const RankFailure* FailureAttribution::root() const {
  if (!primary.empty()) return &primary.front();
  for (const auto& f : secondary)
    if (f.cls != "stopped") return &f;
  return secondary.empty() ? nullptr : &secondary.front();
}

nlohmann::json FailureAttribution::toJson() const {
  const RankFailure* r = root();
  if (!r) return nlohmann::json::object();
  nlohmann::json j = {{"primary", r->toJson()},
                      {"other_primary", nlohmann::json::array()},
                      {"secondary", nlohmann::json::array()}};
  for (const auto& f : primary)
    if (&f != r) j["other_primary"].push_back(f.toJson());
  for (const auto& f : secondary)
    if (&f != r) j["secondary"].push_back(f.toJson());
  return j;
}

std::string FailureAttribution::describe(double jobStart) const {
  const RankFailure* r = root();
  if (!r) return "";
  auto at = [&](const RankFailure& f) {
    std::ostringstream os;
    os << std::fixed << std::setprecision(3) << (f.time - jobStart) << " s";
    return os.str();
  };
  std::ostringstream os;
  os << "  root cause: rank " << r->rank << " (" << r->cls << (r->secondary() ? ", no rank failed on its own" : "")
     << ", at " << at(*r) << "): " << r->error << "\n";
  for (const auto& f : primary)
    if (&f != r) os << "  also failed on its own: rank " << f.rank << " (" << f.cls << ", at " << at(f) << "): " << f.error << "\n";
  std::string line;
  for (const auto& f : secondary) {
    if (&f == r) continue;
    line += (line.empty() ? "" : "; ") + ("rank " + std::to_string(f.rank) + " [" + f.cls + "]: " + clip(f.error, 240));
  }
  if (!line.empty()) os << "  secondary (failed because a peer did): " << line << "\n";
  return os.str();
}

FailureAttribution attributeFailures(std::vector<RankFailure> failures) {
  std::stable_sort(failures.begin(), failures.end(), [](const RankFailure& a, const RankFailure& b) {
    return a.time < b.time || (a.time == b.time && a.rank < b.rank);
  });
  FailureAttribution a;
  for (auto& f : failures) (f.secondary() ? a.secondary : a.primary).push_back(std::move(f));
  return a;
}

}  // namespace moe::launch
