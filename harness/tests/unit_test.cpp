// Rank-free unit tests: mesh geometry and validation, flight recorder,
// stores, rank environment parsing.
#include "common/error_of.h"
#include <algorithm>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <filesystem>
#include <fstream>

#include "harness/comm/factory.h"
#include "harness/comm/flight_recorder.h"
#include "harness/launch/rank_env.h"
#include "harness/mesh/device_mesh.h"
#include "harness/store/store.h"

using namespace moe;
namespace fs = std::filesystem;

namespace {

using ::moe::testutil::errorOf;

// ctest's GPU allocation becomes CUDA_VISIBLE_DEVICES: ids in group order.
TEST(RankEnv, CtestAllocatedGpusAreJoinedInGroupOrder) {
  std::map<std::string, std::string> env;
  auto get = [&env](const char* n) -> const char* {
    auto it = env.find(n);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  EXPECT_EQ(launch::ctestAllocatedGpus(get), "");  // not under ctest's allocation
  env["CTEST_RESOURCE_GROUP_COUNT"] = "2";
  env["CTEST_RESOURCE_GROUP_0_GPUS"] = "id:3,slots:1";
  env["CTEST_RESOURCE_GROUP_1_GPUS"] = "id:1,slots:1";
  EXPECT_EQ(launch::ctestAllocatedGpus(get), "3,1");
  env["CTEST_RESOURCE_GROUP_1_GPUS"] = "slots:1";
  const std::string e = errorOf([&] { launch::ctestAllocatedGpus(get); });
  EXPECT_NE(e.find("CTEST_RESOURCE_GROUP_1_GPUS='slots:1' has no 'id:'"), std::string::npos) << e;
  env["CTEST_RESOURCE_GROUP_COUNT"] = "two";
  EXPECT_NE(errorOf([&] { launch::ctestAllocatedGpus(get); }).find("CTEST_RESOURCE_GROUP_COUNT"), std::string::npos);
}

TEST(MeshShape, RowMajorLayoutLastDimFastest) {
  mesh::MeshShape s(mesh::DeviceMesh::parse("{\"dp\":2,\"ep\":3}"), 6);
  // rank = dp * 3 + ep
  for (int dp = 0; dp < 2; ++dp)
    for (int ep = 0; ep < 3; ++ep) {
      int r = dp * 3 + ep;
      EXPECT_EQ(s.coordsOf(r), (std::vector<int>{dp, ep}));
      EXPECT_EQ(s.rankOf({dp, ep}), r);
    }
  EXPECT_EQ(s.groupRanks(4, {"ep"}), (std::vector<int>{3, 4, 5}));
  EXPECT_EQ(s.groupRanks(4, {"dp"}), (std::vector<int>{1, 4}));
  EXPECT_EQ(s.groupRanks(4, {"dp", "ep"}).size(), 6u);
  EXPECT_EQ(s.groupRanks(4, {"tp"}), (std::vector<int>{4}));
  EXPECT_EQ(s.partition({"dp"}), (std::vector<std::vector<int>>{{0, 3}, {1, 4}, {2, 5}}));
  EXPECT_EQ(s.groupName({"ep", "tp"}), "ep");
  EXPECT_EQ(s.size("tp"), 1);
}

TEST(MeshShape, ThreeDims) {
  mesh::MeshShape s(mesh::DeviceMesh::parse("{\"dp\":2,\"ep\":2,\"tp\":2}"), 8);
  EXPECT_EQ(s.coordsOf(5), (std::vector<int>{1, 0, 1}));
  EXPECT_EQ(s.groupRanks(5, {"tp"}), (std::vector<int>{4, 5}));
  EXPECT_EQ(s.groupRanks(5, {"ep"}), (std::vector<int>{5, 7}));
  EXPECT_EQ(s.groupRanks(5, {"dp", "ep"}), (std::vector<int>{1, 3, 5, 7}));
}

TEST(MeshShape, InvalidShapesAreClearErrors) {
  auto err = [](const std::string& m, int world) {
    return errorOf([&] { mesh::MeshShape(mesh::DeviceMesh::parse(m), world); });
  };
  EXPECT_NE(err("{\"dp\":2,\"ep\":2}", 6).find("product of the dim sizes is 4 but the world has 6"), std::string::npos);
  EXPECT_NE(err("{\"dp\":0,\"ep\":2}", 0).find("dim 'dp' has size 0"), std::string::npos);
  EXPECT_NE(err("{\"dp\":-2,\"ep\":-2}", 4).find("dim 'dp' has size -2"), std::string::npos);
  EXPECT_NE(err("{\"dq\":4}", 4).find("unknown dim name 'dq' (known: dp, ep, tp, edp"), std::string::npos);
  EXPECT_NE(errorOf([] { mesh::DeviceMesh::parse("{\"dp\":2,"); }).find("is not valid JSON"), std::string::npos);
  EXPECT_NE(errorOf([] { mesh::DeviceMesh::parse("[2,2]"); }).find("must be a JSON object"), std::string::npos);
  EXPECT_NE(errorOf([] { mesh::DeviceMesh::parse("{\"dp\":\"2\"}"); }).find("size of dim 'dp' must be an integer"),
            std::string::npos);
  // Duplicate names survive JSON parsing only as separate validation input.
  EXPECT_NE(errorOf([] { mesh::DeviceMesh::validate({{"dp", 2}, {"dp", 2}}, 4); }).find("appears twice"),
            std::string::npos);
}

TEST(MeshShape, ParseKeepsKeyOrder) {
  auto dims = mesh::DeviceMesh::parse("{\"tp\":2,\"ep\":2}");
  ASSERT_EQ(dims.size(), 2u);
  EXPECT_EQ(dims[0].name, "tp");
  EXPECT_EQ(mesh::DeviceMesh::describe(dims), "{\"tp\":2,\"ep\":2}");
}

comm::RankTrace fakeTrace(int rank, comm::OpType op, uint64_t seq, const char* group, comm::CallState st) {
  comm::RankTrace t;
  t.rank = rank;
  comm::TraceRecord r;
  r.id = 1;
  r.seq = seq;
  r.op = static_cast<int32_t>(op);
  r.state = static_cast<int32_t>(st);
  strncpy(r.group, group, sizeof(r.group) - 1);
  t.records.push_back(r);
  return t;
}

TEST(FlightRecorder, DivergenceSentenceNamesEachSideOfTheSplit) {
  using comm::CallState;
  using comm::OpType;
  std::vector<comm::RankTrace> t = {
      fakeTrace(0, OpType::kAllToAll, 7, "ep", CallState::kRunning),
      fakeTrace(1, OpType::kAllToAll, 7, "ep", CallState::kRunning),
      fakeTrace(2, OpType::kAllGather, 7, "ep", CallState::kRunning),
      fakeTrace(3, OpType::kAllToAll, 7, "ep", CallState::kVerifying),
  };
  EXPECT_EQ(comm::diagnoseDivergence(t), "ranks 0,1,3 are in all_to_all#7 on group ep; rank 2 is in all_gather#7 on group ep");
  t[2] = fakeTrace(2, OpType::kAllToAll, 7, "ep", CallState::kRunning);
  EXPECT_EQ(comm::diagnoseDivergence(t), "");  // all agree
  t[1].records.clear();
  EXPECT_EQ(comm::diagnoseDivergence(t), "ranks 0,2,3 are in all_to_all#7 on group ep; rank 1 has no recorded collective");
}

// A record of a call on a group with the given global ranks ("0,1,2,3").
comm::RankTrace blockedIn(int rank, comm::OpType op, uint64_t seq, const char* group, const char* members,
                          comm::CallState st = comm::CallState::kRunning) {
  auto t = fakeTrace(rank, op, seq, group, st);
  strncpy(t.records[0].ranks, members, sizeof(t.records[0].ranks) - 1);
  t.records[0].groupSize = 1 + static_cast<int32_t>(std::count(members, members + strlen(members), ','));
  return t;
}

TEST(FlightRecorder, DeadlockIsProvenOnlyWhenNoCallHasAllItsMembers) {
  using comm::CallState;
  using comm::OpType;
  const std::vector<bool> live(4, false);
  // Ranks 0,2 in a world broadcast; ranks 1,3 in an all_gather on the
  // world's ranks under another group: neither call can complete.
  std::vector<comm::RankTrace> t = {
      blockedIn(0, OpType::kBroadcast, 1, "world", "0,1,2,3"),
      blockedIn(1, OpType::kAllGather, 1, "zero3-check:dp+ep", "0,1,2,3"),
      blockedIn(2, OpType::kBroadcast, 1, "world", "0,1,2,3", CallState::kVerifying),
      blockedIn(3, OpType::kAllGather, 1, "zero3-check:dp+ep", "0,1,2,3"),
  };
  EXPECT_EQ(comm::diagnoseDeadlock(t, live),
            "ranks 0,2 are blocked in broadcast#1 on group world waiting for ranks 1,3; "
            "ranks 1,3 are blocked in all_gather#1 on group zero3-check:dp+ep waiting for ranks 0,2");
  // Disjoint subgroups each complete on their own: not a deadlock, even
  // though the ranks are in different calls.
  t = {blockedIn(0, OpType::kAllReduce, 3, "dp", "0,1"), blockedIn(1, OpType::kAllReduce, 3, "dp", "0,1"),
       blockedIn(2, OpType::kAllGather, 5, "ep", "2,3"), blockedIn(3, OpType::kAllGather, 4, "ep", "2,3")};
  EXPECT_EQ(comm::diagnoseDeadlock(t, live), "");
  // ...until the call that could complete lacks a member.
  t[1] = blockedIn(1, OpType::kAllReduce, 4, "dp", "0,1");
  EXPECT_NE(comm::diagnoseDeadlock(t, live), "");
  // A rank outside any collective (computing) may still arrive: not proven.
  t[1].records[0].state = static_cast<int32_t>(CallState::kCompleted);
  EXPECT_EQ(comm::diagnoseDeadlock(t, live), "");
  // ...but a rank that has exited never will.
  EXPECT_EQ(comm::diagnoseDeadlock(t, {false, true, false, false}),
            "rank 0 is blocked in all_reduce#3 on group dp waiting for rank 1; "
            "rank 2 is blocked in all_gather#5 on group ep waiting for rank 3; "
            "rank 3 is blocked in all_gather#4 on group ep waiting for rank 2");
  // A member list cut off by the record's fixed width proves nothing.
  t = {blockedIn(0, OpType::kAllReduce, 1, "world", "0,1"), blockedIn(1, OpType::kAllReduce, 2, "world", "0,1")};
  EXPECT_NE(comm::diagnoseDeadlock(t, {false, false}), "");
  t[0].records[0].groupSize = 3;
  EXPECT_EQ(comm::diagnoseDeadlock(t, {false, false}), "");
  // Unreadable trace: nothing is proven.
  t = {blockedIn(0, OpType::kAllReduce, 1, "world", "0,1"), blockedIn(1, OpType::kAllReduce, 2, "world", "0,1")};
  t[1].error = "trace file missing";
  EXPECT_EQ(comm::diagnoseDeadlock(t, {false, false}), "");
}

TEST(FlightRecorder, RingKeepsTheNewestRecordsAndTheTraceFileMatches) {
  auto dir = fs::temp_directory_path() / ("moe-fr-test-" + std::to_string(getpid()));
  fs::create_directories(dir);
  auto& fr = comm::FlightRecorder::instance();
  fr.configure(0, 1, dir.string());
  fr.resetCounters();
  auto store = store::makeFileStore((dir / "store").string(), std::chrono::seconds(5));
  auto world = comm::createWorld(store, 0, 1, comm::CommOptions{});
  at::Tensor t = at::ones({3, 2});
  for (int i = 0; i < 300; ++i) world->allReduce(t);
  auto snap = fr.snapshot();
  ASSERT_EQ(snap.size(), 256u);  // the ring's capacity
  EXPECT_EQ(snap.front().id, 300u - 255u);
  EXPECT_EQ(snap.back().id, 300u);
  EXPECT_EQ(snap.back().seq, 300u);
  EXPECT_EQ(snap.back().state, static_cast<int32_t>(comm::CallState::kCompleted));
  EXPECT_EQ(std::string(snap.back().shapes), "[3, 2]");
  EXPECT_EQ(fr.counter("world", comm::OpType::kAllReduce).calls, 300);
  auto fromFile = comm::readTraceFile((dir / "rank0.trace").string());
  ASSERT_TRUE(fromFile.error.empty()) << fromFile.error;
  ASSERT_EQ(fromFile.records.size(), 256u);
  EXPECT_EQ(fromFile.records.back().id, 300u);
  // A truncated or foreign file is an error, not a crash.
  std::ofstream(dir / "rank1.trace") << "garbage";
  EXPECT_NE(comm::readTraceFile((dir / "rank1.trace").string()).error.find("truncated"), std::string::npos);
  EXPECT_NE(comm::readTraceFile((dir / "rank9.trace").string()).error.find("no trace file"), std::string::npos);
  fr.configure(0, 1, "");  // back to memory before the directory goes
  fs::remove_all(dir);
}

TEST(FlightRecorder, FailedCallIsRecordedWithItsError) {
  auto& fr = comm::FlightRecorder::instance();
  fr.configure(0, 1, "");
  auto dir = fs::temp_directory_path() / ("moe-fr-fail-" + std::to_string(getpid()));
  auto world = comm::createWorld(store::makeFileStore(dir.string(), std::chrono::seconds(5)), 0, 1, comm::CommOptions{});
  at::Tensor in = at::ones({2, 3}), out = at::empty({3, 3});
  EXPECT_THROW(world->allGather(out, in), HarnessError);  // wrong output rows: rejected before any record
  at::Tensor bad = at::ones({2}, at::kInt);
  EXPECT_NE(errorOf([&] { world->allReduce(bad); }).find("gloo backend: all_reduce does not support dtype int32"),
            std::string::npos);
  fs::remove_all(dir);
}

TEST(Store, FileStoreSetGetAddAndTimeout) {
  auto dir = fs::temp_directory_path() / ("moe-store-" + std::to_string(getpid()));
  auto s = store::makeFileStore(dir.string(), std::chrono::milliseconds(200));
  s->set("a/b", {1, 2, 3});
  EXPECT_EQ(s->get("a/b"), (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(s->add("n", 2), 2);
  EXPECT_EQ(s->add("n", 3), 5);
  auto p = store::prefixed(s, "job");
  p->set("k", {9});
  EXPECT_EQ(s->get("job/k"), (std::vector<uint8_t>{9}));
  EXPECT_NE(errorOf([&] { s->get("missing"); }).find("key 'missing' did not appear within 200 ms"), std::string::npos);
  fs::remove_all(dir);
}

TEST(Store, TcpStoreServerOnFreePortAndClient) {
  int port = 0;
  store::TcpStoreOptions so;
  so.isServer = true;
  // c10d counts connect timeouts in whole seconds.
  so.timeout = std::chrono::seconds(2);
  auto server = store::makeTcpStore(so, &port);
  ASSERT_GT(port, 0);
  store::TcpStoreOptions co;
  co.port = port;
  co.timeout = std::chrono::seconds(1);
  auto client = store::makeTcpStore(co);
  client->set("x", {7});
  EXPECT_EQ(server->get("x"), (std::vector<uint8_t>{7}));
  EXPECT_EQ(client->add("c", 4), 4);
  EXPECT_NE(errorOf([&] { client->get("never"); }).find("waiting for key 'never'"), std::string::npos);
}

struct EnvGuard {
  std::vector<std::string> names = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                                    "TORCHELASTIC_USE_AGENT_STORE", "SLURM_PROCID", "SLURM_NTASKS",
                                    "MOE_HARNESS_FILE_STORE"};
  EnvGuard() { for (auto& n : names) unsetenv(n.c_str()); }
  ~EnvGuard() { for (auto& n : names) unsetenv(n.c_str()); }
};

TEST(RankEnv, TorchrunAndSlurmVariables) {
  EnvGuard g;
  EXPECT_NE(errorOf([] { launch::rankEnvFromEnvironment(); }).find("RANK and WORLD_SIZE are not set"), std::string::npos);
  setenv("RANK", "2", 1);
  setenv("WORLD_SIZE", "4", 1);
  EXPECT_NE(errorOf([] { launch::rankEnvFromEnvironment(); }).find("MASTER_ADDR and MASTER_PORT must be set"),
            std::string::npos);
  setenv("MASTER_ADDR", "10.0.0.1", 1);
  setenv("MASTER_PORT", "29500", 1);
  setenv("LOCAL_RANK", "0", 1);
  auto e = launch::rankEnvFromEnvironment();
  EXPECT_EQ(e.rank, 2);
  EXPECT_EQ(e.worldSize, 4);
  EXPECT_EQ(e.masterPort, 29500);
  EXPECT_FALSE(e.agentStore);
  setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);
  EXPECT_TRUE(launch::rankEnvFromEnvironment().agentStore);
  setenv("RANK", "4", 1);
  EXPECT_NE(errorOf([] { launch::rankEnvFromEnvironment(); }).find("RANK=4 is outside WORLD_SIZE=4"), std::string::npos);
  setenv("RANK", "x1", 1);
  EXPECT_NE(errorOf([] { launch::rankEnvFromEnvironment(); }).find("RANK='x1' is not an integer"), std::string::npos);
  unsetenv("RANK");
  setenv("SLURM_PROCID", "1", 1);
  EXPECT_EQ(launch::rankEnvFromEnvironment().rank, 1);
}

TEST(Factory, UnknownBackendAndNcclAvailability) {
  auto dir = fs::temp_directory_path() / ("moe-factory-" + std::to_string(getpid()));
  auto s = store::makeFileStore(dir.string(), std::chrono::seconds(1));
  comm::CommOptions o;
  o.backend = "mpi";
  EXPECT_NE(errorOf([&] { comm::createWorld(s, 0, 1, o); }).find("unknown backend 'mpi' (known: gloo, nccl)"),
            std::string::npos);
  std::string reason;
  EXPECT_FALSE(comm::ncclUsable(1 << 20, &reason));
  EXPECT_FALSE(reason.empty());
  fs::remove_all(dir);
}

// The device lane (issue 16): the default device follows the backend, and
// the combinations that cannot work are user errors naming the option.
TEST(DeviceLane, DefaultDeviceFollowsTheBackend) {
  EXPECT_EQ(comm::defaultDeviceType("gloo"), "cpu");
  EXPECT_EQ(comm::defaultDeviceType("nccl"), "cuda");
  EXPECT_EQ(comm::resolveDeviceType("gloo", ""), "cpu");
  EXPECT_EQ(comm::resolveDeviceType("nccl", ""), "cuda");
  EXPECT_EQ(comm::resolveDeviceType("gloo", "cpu"), "cpu");
  EXPECT_EQ(comm::resolveDeviceType("gloo", "cuda"), "cuda");  // ranks may share a GPU
  EXPECT_EQ(comm::resolveDeviceType("nccl", "cuda"), "cuda");
}

TEST(DeviceLane, ImpossibleCombinationsAreUserErrors) {
  EXPECT_NE(errorOf([] { comm::resolveDeviceType("nccl", "cpu"); }).find("NCCL moves CUDA tensors only"),
            std::string::npos);
  EXPECT_NE(errorOf([] { comm::resolveDeviceType("gloo", "tpu"); }).find("unknown device 'tpu' (known: cpu, cuda)"),
            std::string::npos);
  EXPECT_NE(errorOf([] { comm::resolveDeviceType("mpi", ""); }).find("unknown backend 'mpi'"), std::string::npos);
}

// Here (no GPU) the probe says no, naming the missing piece; with a GPU the
// impossible request still says no, naming the count.
TEST(DeviceLane, CudaUsableNamesTheMissingPiece) {
  std::string reason;
  EXPECT_FALSE(comm::cudaUsable(1 << 20, &reason));
  EXPECT_TRUE(reason.find("fewer GPUs than needed: needs 1048576 GPUs") != std::string::npos ||
              reason.find("no usable CUDA driver or device") != std::string::npos ||
              reason.find("built without CUDA") != std::string::npos)
      << reason;
}

// A one-rank gloo world on the CPU lane: tensors live on the CPU, as before.
TEST(DeviceLane, GlooWorldOnTheCpuLaneHasCpuTensors) {
  auto dir = fs::temp_directory_path() / ("moe-lane-" + std::to_string(getpid()));
  auto s = store::makeFileStore(dir.string(), std::chrono::seconds(5));
  comm::CommOptions o;  // gloo, device = the backend's default
  auto world = comm::createWorld(s, 0, 1, o);
  EXPECT_TRUE(world->device().is_cpu());
  fs::remove_all(dir);
}

// --device cuda where CUDA cannot run: a user error naming the reason, before
// any process group exists.
TEST(DeviceLane, CudaLaneWithoutCudaIsAUserErrorNamingTheReason) {
  std::string why;
  if (comm::cudaUsable(1, &why)) GTEST_SKIP() << "a GPU is usable here: this test is about machines without one";
  auto dir = fs::temp_directory_path() / ("moe-lane-cuda-" + std::to_string(getpid()));
  auto s = store::makeFileStore(dir.string(), std::chrono::seconds(5));
  comm::CommOptions o;
  o.deviceType = "cuda";
  const std::string e = errorOf([&] { comm::createWorld(s, 0, 1, o); });
  EXPECT_NE(e.find("CUDA is not available in this process: " + why), std::string::npos) << e;
  fs::remove_all(dir);
}

}  // namespace
