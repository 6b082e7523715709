// `moe-harness selftest`: run inside a launched job. Exercises every
// collective on the world, on each mesh dim, on a multi-dim group and on a
// non-contiguous subgroup, and verifies every result against a local ground
// truth (see collective_check.h). The smoke job of `make run`.
//
// --fault injects a failure on one rank (--fault-rank) or several
// (--fault-ranks) so tests can prove the launcher, its root-cause attribution
// and the desync detection report it: abort | exit | sleep | desync |
// bad-splits | user-error | internal (an internal error, MOE_ASSERT: the
// CLI's exit 3, which no input of a user can otherwise cause).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <thread>

#include "common/gpu_requirement.h"
#include "harness/cli/commands.h"
#include "harness/comm/collective_check.h"
#include "harness/comm/flight_recorder.h"
#include "harness/launch/rank_env.h"
#include "harness/mesh/device_mesh.h"

namespace moe::cli {
namespace {


struct SelftestArgs {
  std::string backend = "gloo";
  std::string iface;
  std::string mesh;
  double commTimeout = 60;
  bool noVerify = false;
  std::string fault;
  int faultRank = 1;
  std::vector<int> faultRanks;  // overrides faultRank when given
  double faultStagger = 0;      // user-error: the i-th listed rank raises i * this many seconds late
  double sleepSeconds = 30;
  std::string pidDir;
};

std::string defaultMesh(int world) {
  if (world % 2 == 0 && world >= 4) return moe::str("{\"dp\":", world / 2, ",\"ep\":2}");
  return moe::str("{\"dp\":", world, "}");
}

void injectFault(const SelftestArgs& a, comm::Communicator& world) {
  // desync: the faulty rank gathers on a group of its own name (every rank is
  // a member, all create it) while the others all-reduce on the world. The
  // two calls are on different groups, so no fingerprint exchange meets and
  // only the launcher's desync watchdog can stop the job (exit 125).
  std::shared_ptr<comm::Communicator> desyncGroup;
  if (a.fault == "desync") {
    std::vector<int> all(world.size());
    for (int r = 0; r < world.size(); ++r) all[r] = r;
    desyncGroup = world.subgroup("fault_desync", all);
  }
  const std::vector<int> faulty = a.faultRanks.empty() ? std::vector<int>{a.faultRank} : a.faultRanks;
  const auto me = std::find(faulty.begin(), faulty.end(), world.rank());
  if (a.fault.empty() || me == faulty.end()) {
    // The other ranks run what everybody else runs at this point.
    if (!a.fault.empty()) {
      at::Tensor t = at::ones({16}, at::kFloat);
      if (a.fault == "bad-splits") {
        std::vector<int64_t> splits(world.size(), 1);
        at::Tensor out = at::empty({world.size(), 1});
        at::Tensor in = at::ones({world.size(), 1});
        world.allToAllSingle(out, in, splits, splits);
      } else {
        world.allReduce(t);
      }
    }
    return;
  }
  std::cerr << "selftest: injecting fault '" << a.fault << "' on rank " << world.rank() << std::endl;
  if (a.fault == "abort") std::abort();
  if (a.fault == "user-error") {
    // A user error (exit 2) while the other ranks wait in an all_reduce:
    // they fail because this rank is gone, which makes their errors secondary.
    std::this_thread::sleep_for(std::chrono::duration<double>(a.faultStagger * (me - faulty.begin())));
    fail("selftest: planted user error on rank ", world.rank(), " (--fault user-error)");
  }
  if (a.fault == "exit") std::exit(3);
  // A failed invariant, as a bug of the harness would raise it: main maps it
  // to "moe-harness: internal error: ..." and exit 3 (tests/exit_codes_test.cpp).
  if (a.fault == "internal") MOE_ASSERT(a.fault != "internal", "selftest --fault internal (test-only)");
  if (a.fault == "sleep") {
    std::this_thread::sleep_for(std::chrono::duration<double>(a.sleepSeconds));
    at::Tensor t = at::ones({16}, at::kFloat);
    world.allReduce(t);
    return;
  }
  if (a.fault == "desync") {
    at::Tensor in = at::ones({16}, at::kFloat);
    at::Tensor out = at::empty({16 * world.size()}, at::kFloat);
    desyncGroup->allGather(out, in);
    return;
  }
  if (a.fault == "bad-splits") {
    // Sends 2 rows to rank 0 where rank 0 expects 1.
    int n = world.size();
    std::vector<int64_t> inSplits(n, 1), outSplits(n, 1);
    inSplits[0] = 2;
    at::Tensor in = at::ones({n + 1, 1});
    at::Tensor out = at::empty({n, 1});
    world.allToAllSingle(out, in, outSplits, inSplits);
    return;
  }
  fail("selftest: unknown --fault '", a.fault, "' (known: abort, exit, sleep, desync, bad-splits, user-error, internal)");
}

int runSelftest(const SelftestArgs& a) {
  at::set_num_threads(1);  // ranks share the machine's cores
  auto env = launch::rankEnvFromEnvironment();
  if (a.backend == "nccl") {
    std::string reason;
    if (!comm::ncclUsable(env.worldSize, &reason)) {
      // Exit code 77 = skipped (ctest SKIP_RETURN_CODE), never a pass; 1
      // under MOE_HARNESS_REQUIRE_GPU=1 (common/gpu_requirement.h).
      std::cout << "selftest: " << moe::gpuUnavailableMessage(reason) << std::endl;
      return moe::gpuUnavailableExitCode();
    }
  }
  if (!a.pidDir.empty()) std::ofstream(a.pidDir + "/rank" + std::to_string(env.rank) + ".pid") << getpid() << "\n";
  comm::CommOptions co;
  co.backend = a.backend;
  co.iface = a.iface;
  co.timeout = std::chrono::milliseconds(static_cast<int64_t>(a.commTimeout * 1000));
  co.verify = !a.noVerify;
  auto world = launch::initWorld(env, co);
  comm::CollectiveCheckOptions opts;
  if (a.backend == "nccl") opts.device = at::Device(at::kCUDA, env.localRank);

  int failures = 0, passed = 0;
  auto check = [&](comm::Communicator& c) {
    auto rep = comm::checkCollectives(c, opts);
    passed += rep.passed;
    failures += static_cast<int>(rep.failures.size());
    for (const auto& f : rep.failures) std::cerr << "selftest FAILED: " << f << std::endl;
    if (env.rank == c.globalRanks()[0])
      std::cout << "selftest: group '" << c.name() << "' (" << c.size() << " ranks): " << rep.passed
                << " checks passed, " << rep.failures.size() << " failed" << std::endl;
  };
  check(*world);
  injectFault(a, *world);

  std::string meshText = a.mesh.empty() ? defaultMesh(env.worldSize) : a.mesh;
  mesh::DeviceMesh m(world, mesh::DeviceMesh::parse(meshText));
  for (const auto& d : m.dims()) check(*m.comm(d.name));
  if (m.ndim() >= 2) check(*m.comm(std::vector<std::string>{m.dims()[0].name, m.dims()[1].name}));
  if (env.worldSize >= 3) {
    // A non-contiguous subgroup: the first and the last rank.
    auto g = world->subgroup("first_last", {0, env.worldSize - 1});
    if (g) check(*g);
  }
  world->barrier();
  if (env.rank == 0) {
    std::cout << "selftest: mesh " << meshText << ", " << env.worldSize << " ranks, backend " << a.backend << ": "
              << (failures ? "FAILED" : "ok") << std::endl;
    for (const auto& [key, c] : comm::FlightRecorder::instance().counters())
      std::cout << "  rank 0 " << key.first << " " << comm::opName(key.second) << ": " << c.calls << " calls, "
                << c.bytesSent << " B sent, " << c.bytesRecv << " B received" << std::endl;
  }
  return failures ? 1 : 0;
}

}  // namespace

void addSelftestCommand(CLI::App& app) {
  auto a = std::make_shared<SelftestArgs>();
  auto* cmd = app.add_subcommand("selftest", "Verify every collective on the world and its sub-groups (run inside a launched job)");
  cmd->add_option("--backend", a->backend, "gloo or nccl")->check(CLI::IsMember({"gloo", "nccl"}));
  cmd->add_option("--iface", a->iface, "Gloo: network interface or address to bind (default loopback)");
  cmd->add_option("--mesh", a->mesh, "Mesh JSON, e.g. {\"dp\":2,\"ep\":2} (default depends on the world size)");
  cmd->add_option("--comm-timeout", a->commTimeout, "Seconds a collective may block");
  cmd->add_flag("--no-verify", a->noVerify, "Skip the fingerprint cross-check before collectives");
  cmd->add_option("--fault", a->fault, "Inject a fault: abort|exit|sleep|desync|bad-splits|user-error|internal");
  cmd->add_option("--fault-rank", a->faultRank, "Rank that injects the fault");
  cmd->add_option("--fault-ranks", a->faultRanks, "Ranks that inject the fault, comma-separated (overrides --fault-rank)")
      ->delimiter(',');
  cmd->add_option("--fault-stagger", a->faultStagger,
                  "user-error: the i-th rank of --fault-ranks raises i times this many seconds after the first");
  cmd->add_option("--sleep", a->sleepSeconds, "Seconds the faulty rank sleeps (--fault sleep)");
  cmd->add_option("--pid-dir", a->pidDir, "Write rank{R}.pid files here (used by tests)");
  cmd->callback([a] {
    int code = runSelftest(*a);
    if (code) throw CommandExit{code};
  });
}

}  // namespace moe::cli

namespace moe::cli {
MOE_REGISTER(Command, FunctionCommand, "selftest", moe::cli::addSelftestCommand);
}  // namespace moe::cli
