#pragma once
// A rank's identity and its world communicator, from the torchrun/Slurm
// environment. The same binary runs under `moe-harness launch`, `torchrun`
// or `srun`.
//
// Variables read: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
// (torchrun names; SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID are the
// fallbacks). When TORCHELASTIC_USE_AGENT_STORE=True (torchrun, and our
// launcher) the store server runs in the agent and every rank is a client;
// otherwise rank 0 hosts it on MASTER_PORT, as torch's env:// init does.
// MOE_HARNESS_FILE_STORE=DIR uses a file store in DIR instead of TCP.
// MOE_HARNESS_JOB_TOKEN (set by our launcher): the job's token, checked
// against the store's before any key is used (harness/store/job_store.h).
// MOE_HARNESS_IFACE (set by `launch --iface`): the interface or address the
// ranks' Gloo devices bind when the program gives none.
#include <functional>
#include <memory>
#include <string>

#include "harness/comm/factory.h"
#include "harness/store/store.h"

namespace moe::launch {

struct RankEnv {
  int rank = 0;
  int worldSize = 1;
  int localRank = 0;
  std::string masterAddr = "127.0.0.1";
  int masterPort = 0;
  bool agentStore = false;
  std::string fileStoreDir;
  std::string jobToken;  // MOE_HARNESS_JOB_TOKEN; "" = no check
  std::string iface;     // MOE_HARNESS_IFACE; "" = loopback
};

// Throws HarnessError naming the missing or malformed variable.
RankEnv rankEnvFromEnvironment();

// The launcher sets this in each rank: its steady_clock (CLOCK_MONOTONIC,
// one clock for every process of a host) in nanoseconds just before the
// fork, so a rank can tell how long it took to start.
inline constexpr const char* kSpawnTimeEnv = "MOE_HARNESS_SPAWN_NS";
// Seconds from the launcher's fork to now, or -1 when this process was not
// started by the harness's launcher (or the value is unreadable).
double secondsSinceSpawn();
bool runningUnderLauncher();  // RANK and WORLD_SIZE are set

// The GPUs ctest allocated to the running test (RESOURCE_GROUPS with
// `gpus`, `ctest --resource-spec-file`): the ids of CTEST_RESOURCE_GROUP_<i>_GPUS
// ("id:3,slots:1") for i < CTEST_RESOURCE_GROUP_COUNT, comma-joined ("3,5"),
// for CUDA_VISIBLE_DEVICES, so rank r's LOCAL_RANK picks the r-th allocated
// GPU; "" when ctest allocated none. `getenv` reads a variable (nullptr =
// unset). Throws HarnessError naming a malformed variable.
std::string ctestAllocatedGpus(const std::function<const char*(const char*)>& getenv);

// Connects to (or hosts) the job's store.
std::shared_ptr<store::Store> connectStore(const RankEnv& env, std::chrono::milliseconds timeout);

// Store + world communicator for this rank; also configures the flight
// recorder (trace file when MOE_HARNESS_TRACE_DIR is set). An empty
// opts.iface takes env.iface.
std::shared_ptr<comm::Communicator> initWorld(const RankEnv& env, comm::CommOptions opts);

}  // namespace moe::launch
