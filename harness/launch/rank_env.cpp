#include "harness/launch/rank_env.h"

#include <chrono>
#include <cstdlib>

#include "harness/comm/flight_recorder.h"
#include "common/error.h"
#include "harness/store/job_store.h"

namespace moe::launch {
namespace {

const char* getEnv(const char* a, const char* b = nullptr) {
  const char* v = std::getenv(a);
  if (!v && b) v = std::getenv(b);
  return v;
}

int parseInt(const char* name, const char* v) {
  try {
    size_t pos = 0;
    int x = std::stoi(v, &pos);
    if (pos != std::string(v).size()) throw std::invalid_argument("trailing");
    return x;
  } catch (const std::exception&) {
    fail("environment variable ", name, "='", v, "' is not an integer");
  }
}

}  // namespace

bool runningUnderLauncher() { return getEnv("RANK", "SLURM_PROCID") && getEnv("WORLD_SIZE", "SLURM_NTASKS"); }

RankEnv rankEnvFromEnvironment() {
  RankEnv e;
  const char* rank = getEnv("RANK", "SLURM_PROCID");
  const char* world = getEnv("WORLD_SIZE", "SLURM_NTASKS");
  if (!rank || !world)
    fail("RANK and WORLD_SIZE are not set: run this inside a job, e.g. `moe-harness launch -n 4 -- ...` or torchrun");
  e.rank = parseInt("RANK", rank);
  e.worldSize = parseInt("WORLD_SIZE", world);
  if (e.worldSize < 1) fail("WORLD_SIZE=", e.worldSize, " must be at least 1");
  if (e.rank < 0 || e.rank >= e.worldSize) fail("RANK=", e.rank, " is outside WORLD_SIZE=", e.worldSize);
  if (const char* t = getEnv(store::kJobTokenEnv)) e.jobToken = t;
  if (const char* i = getEnv("MOE_HARNESS_IFACE")) e.iface = i;
  if (const char* lr = getEnv("LOCAL_RANK", "SLURM_LOCALID")) e.localRank = parseInt("LOCAL_RANK", lr);
  if (const char* fs = getEnv("MOE_HARNESS_FILE_STORE")) {
    e.fileStoreDir = fs;
    return e;
  }
  const char* addr = getEnv("MASTER_ADDR");
  const char* port = getEnv("MASTER_PORT");
  if (e.worldSize > 1 && (!addr || !port))
    fail("MASTER_ADDR and MASTER_PORT must be set for a job of ", e.worldSize, " ranks");
  if (addr) e.masterAddr = addr;
  if (port) e.masterPort = parseInt("MASTER_PORT", port);
  const char* agent = getEnv("TORCHELASTIC_USE_AGENT_STORE");
  e.agentStore = agent && (std::string(agent) == "True" || std::string(agent) == "1");
  return e;
}

std::shared_ptr<store::Store> connectStore(const RankEnv& env, std::chrono::milliseconds timeout) {
  if (!env.fileStoreDir.empty()) return store::makeFileStore(env.fileStoreDir, timeout);
  store::TcpStoreOptions o;
  o.host = env.masterAddr;
  o.port = env.masterPort;
  o.isServer = !env.agentStore && env.rank == 0;
  o.numWorkers = env.worldSize;
  o.timeout = timeout;
  if (o.isServer) return store::hostRankStore(o, env.jobToken);
  // Our launcher publishes the token before any rank learns the port; a
  // rank-0-hosted store publishes it once rank 0 is up.
  return store::connectJobStore(o, env.jobToken, env.agentStore ? std::chrono::milliseconds(0) : timeout);
}

std::shared_ptr<comm::Communicator> initWorld(const RankEnv& env, comm::CommOptions opts) {
  comm::FlightRecorder::instance().configure(env.rank, env.worldSize);
  opts.localRank = env.localRank;
  if (opts.iface.empty()) opts.iface = env.iface;
  auto store = connectStore(env, opts.timeout);
  return comm::createWorld(store, env.rank, env.worldSize, opts);
}

std::string ctestAllocatedGpus(const std::function<const char*(const char*)>& getenv) {
  const char* count = getenv("CTEST_RESOURCE_GROUP_COUNT");
  if (count == nullptr || *count == '\0') return "";
  const int n = parseInt("CTEST_RESOURCE_GROUP_COUNT", count);
  std::string ids;
  for (int i = 0; i < n; ++i) {
    const std::string name = "CTEST_RESOURCE_GROUP_" + std::to_string(i) + "_GPUS";
    const char* v = getenv(name.c_str());
    if (v == nullptr) continue;  // a group without gpus (another resource type)
    // "id:<id>,slots:<n>" (one entry per group with our RESOURCE_GROUPS).
    const std::string s = v;
    const auto at = s.find("id:");
    if (at == std::string::npos) fail("environment variable ", name, "='", s, "' has no 'id:' (ctest resource allocation)");
    const auto end = s.find(',', at);
    const std::string id = s.substr(at + 3, end == std::string::npos ? std::string::npos : end - at - 3);
    if (id.empty()) fail("environment variable ", name, "='", s, "' has an empty id");
    ids += (ids.empty() ? "" : ",") + id;
  }
  return ids;
}

double secondsSinceSpawn() {
  const char* v = std::getenv(kSpawnTimeEnv);
  if (!v || !*v) return -1;
  char* end = nullptr;
  const long long ns = std::strtoll(v, &end, 10);
  if (*end != '\0' || ns <= 0) return -1;
  const auto now = std::chrono::steady_clock::now().time_since_epoch();
  const double s = std::chrono::duration<double>(now - std::chrono::nanoseconds(ns)).count();
  return s >= 0 ? s : -1;  // another host's clock (a copied environment): unknown
}

}  // namespace moe::launch
