// Loading paths on real gloo ranks (2, 3 and 4): every path gives every rank
// exactly the torch.chunk slice of the full checkpoint tensor (computed here
// from the in-memory init, not from another loader), from a fused and a
// hub-layout checkpoint file; each path reads what it says it reads; and a
// faulty loader that issues different collectives on one rank is reported by
// the desync detection within seconds.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include <unistd.h>

#include "harness/comm/flight_recorder.h"
#include "harness/mesh/device_mesh.h"
#include "harness/tests/rank_test_util.h"
#include "reference/model/config.h"
#include "reference/io/expert_layout.h"
#include "reference/io/safetensors.h"
#include "reference/model/init.h"
#include "reference/parallel/loading.h"
#include "reference/parallel/tests/loading_test_util.h"
#include "reference/placement/dist_tensor.h"

namespace moe::parallel {
namespace {

constexpr uint64_t kSeed = 11;

std::string sourcePath(const std::string& rel) { return std::string(MOE_SOURCE_DIR) + "/" + rel; }

// A TensorSource that counts the elements read per tensor, to prove what
// each path reads (only its slices; under rank0_broadcast only rank 0 reads
// non-EP tensors).
class CountingSource : public io::TensorSource {
 public:
  explicit CountingSource(const io::TensorSource& base) : base_(base) {}
  using io::TensorSource::readSlice;
  std::string where() const override { return base_.where(); }
  std::vector<std::string> names() const override { return base_.names(); }
  bool has(const std::string& n) const override { return base_.has(n); }
  std::vector<int64_t> shape(const std::string& n) const override { return base_.shape(n); }
  at::ScalarType scalarType(const std::string& n) const override { return base_.scalarType(n); }
  at::Tensor readSlice(const std::string& n, const std::vector<io::SliceRange>& r) const override {
    auto t = base_.readSlice(n, r);
    read_[n] += t.numel();
    return t;
  }
  int64_t elementsRead(const std::string& n) const {
    auto it = read_.find(n);
    return it == read_.end() ? 0 : it->second;
  }

 private:
  const io::TensorSource& base_;
  mutable std::map<std::string, int64_t> read_;
};

struct Checkpoint {
  std::string file;
  io::ExpertLayout layout;
  at::ScalarType dtype;  // of the stored tensors; the loaded masters are fp32
  std::string describe() const {
    return moe::str(io::layoutName(layout), " ", dtype == at::kFloat ? "fp32" : "bf16", " checkpoint");
  }
};

// Writes the seed's init as fused fp32, hub-layout fp32 and fused bf16
// model.safetensors files (bf16: the paths convert at different points,
// rank 0 before the broadcast, init_then_load in copy_).
// Runs in the parent before the ranks fork (one writer, no races).
std::vector<Checkpoint> writeCheckpoints(const ref::ModelConfig& cfg, const std::string& tag) {
  at::set_num_threads(1);  // no OpenMP pool in the parent the ranks fork from
  const auto dir = std::filesystem::temp_directory_path() /
                   moe::str("moe_loading_", tag, "_", ::getpid());
  std::filesystem::create_directories(dir);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& kv : ref::initParameters(cfg, kSeed)) tensors.push_back({kv.key(), kv.value()});
  const std::string fused = (dir / "fused.safetensors").string(), hub = (dir / "hub.safetensors").string();
  const std::string bf16 = (dir / "fused_bf16.safetensors").string();
  io::writeSafetensors(fused, tensors);
  io::writeSafetensors(hub, io::toHubLayout(tensors));
  for (auto& [name, t] : tensors) t = t.to(at::kBFloat16);
  io::writeSafetensors(bf16, tensors);
  return {{fused, io::ExpertLayout::kFused, at::kFloat},
          {hub, io::ExpertLayout::kHub, at::kFloat},
          {bf16, io::ExpertLayout::kFused, at::kBFloat16}};
}

struct LoadCase {
  std::string name;
  int nranks;
  std::string mesh;
  std::string plan;    // cases/plans/<plan>.json
  std::string config;  // cases/configs/<config>
};

// What one rank needs to load a case: mesh, plan, and the full init tensors
// (the oracle's input, from memory, not from the checkpoint file).
struct RankSetup {
  std::shared_ptr<comm::Communicator> world;
  std::unique_ptr<mesh::DeviceMesh> mesh;
  ref::ModelConfig cfg;
  plan::AppliedPlan applied;
  ref::ParamMap full;
};

RankSetup setUp(const LoadCase& c) {
  RankSetup s;
  s.world = ranktest::rankWorld();
  s.mesh = std::make_unique<mesh::DeviceMesh>(s.world, mesh::DeviceMesh::parse(c.mesh));
  s.cfg = ref::ModelConfig::fromFile(sourcePath("cases/configs/" + c.config));
  s.applied =
      plan::applyPlan(plan::Plan::fromFile(sourcePath("cases/plans/" + c.plan + ".json")), s.cfg, s.mesh->shape());
  s.full = ref::initParameters(s.cfg, kSeed);
  return s;
}

// "" when every parameter of the plan is in `local` and bitwise equal to the
// oracle slice of the full tensor (rounded to `stored` and back to fp32, as
// a checkpoint in that dtype holds it); else the first difference, naming
// the rank, the tensor, its placements and both values.
std::string firstDifference(const RankSetup& s, const ref::ParamMap& local, at::ScalarType stored = at::kFloat) {
  const int rank = s.world->rank();
  if (local.size() != s.applied.params.size())
    return moe::str("rank ", rank, ": ", local.size(), " parameters vs ", s.applied.params.size(), " in the plan");
  for (const auto& p : s.applied.params) {
    if (!local.contains(p.name)) return moe::str("rank ", rank, ": no parameter ", p.name);
    const auto expected =
        testing::expectedSlice(ref::getParam(s.full, p.name).to(stored).to(at::kFloat), p.placements,
                               ref::meshSizes(*s.mesh), s.mesh->coords());
    const auto diff = testing::bitwiseDiff(local[p.name], expected);
    if (!diff.empty()) return moe::str("rank ", rank, ": ", p.name, " ", ref::toString(p.placements), ": ", diff);
  }
  return "";
}

LoadOptions optionsFor(const RankSetup& s, LoadPath path, const io::TensorSource& source) {
  LoadOptions lo;
  lo.path = path;
  lo.source = &source;
  lo.mesh = s.mesh.get();
  lo.plan = &s.applied;
  return lo;
}

// One rank: every path x every checkpoint layout, each shard compared bit
// for bit with the oracle slice of the in-memory init, and what each path
// read and broadcast accounted for.
int loadAndCompare(const LoadCase& c, const std::vector<Checkpoint>& files) {
  const RankSetup s = setUp(c);
  const int rank = s.world->rank();
  const auto& mesh = *s.mesh;
  int epParams = 0;
  for (const auto& p : s.applied.params) epParams += isEpSharded(p, mesh.shape());
  if (mesh.size("ep") > 1)
    RANK_CHECK(epParams == 2 * s.cfg.numMoeLayers(), "rank ", rank, ": ", epParams,
               " EP-sharded parameters, expected the 2 fused expert tensors of each of ", s.cfg.numMoeLayers(),
               " MoE layers");

  std::ostringstream stats;  // per path, fp32 fused checkpoint
  for (const auto& ckpt : files) {
    io::SafetensorsReader reader(ckpt.file);
    io::FusedExpertView view(reader);
    RANK_CHECK(view.layout() == ckpt.layout && reader.scalarType("model.norm.weight") == ckpt.dtype, "rank ", rank,
               ": ", ckpt.file, " has layout ", io::layoutName(view.layout()));
    for (const auto& pathName : loadPathNames()) {
      const std::string what = moe::str(c.name, ", ", pathName, ", ", ckpt.describe());
      CountingSource counting(view);
      LoadOptions lo = optionsFor(s, parseLoadPath(pathName), counting);
      std::set<std::string> broadcast;
      lo.hooks.broadcast = [&](comm::Communicator& w, const plan::ParamPlacement& p, at::Tensor& t) {
        broadcast.insert(p.name);
        w.broadcast(t, 0);
      };
      // Empty parameters start as NaN: an element the fill missed cannot
      // compare equal below.
      lo.hooks.emptyFill = std::nanf("");
      auto& fr = comm::FlightRecorder::instance();
      const auto before = fr.counter(s.world->name(), comm::OpType::kBroadcast);
      const ref::ParamMap local = loadParams(lo);
      const auto after = fr.counter(s.world->name(), comm::OpType::kBroadcast);
      const auto broadcasts = after.calls - before.calls;

      const auto diff = firstDifference(s, local, ckpt.dtype);
      RANK_CHECK(diff.empty(), what, ": ", diff);
      int64_t nonEp = 0;
      for (const auto& p : s.applied.params) {
        const bool ep = isEpSharded(p, mesh.shape());
        nonEp += !ep;
        const int64_t readCount = counting.elementsRead(p.name);
        if (lo.path == LoadPath::kRank0Broadcast && !ep) {
          const int64_t want = rank == 0 ? ref::getParam(s.full, p.name).numel() : 0;
          RANK_CHECK(readCount == want, "rank ", rank, ", ", what, ": read ", readCount, " elements of ", p.name,
                     ", expected ", want, " (only rank 0 reads a broadcast tensor, whole)");
          RANK_CHECK(broadcast.count(p.name), "rank ", rank, ", ", what, ": ", p.name, " was not broadcast");
        } else {
          // Shard-on-read, init_then_load, and EP tensors under
          // rank0_broadcast: exactly the rank's own elements.
          const int64_t want = local[p.name].numel();
          RANK_CHECK(readCount == want, "rank ", rank, ", ", what, ": read ", readCount, " elements of ", p.name,
                     ", its local shard has ", want);
          RANK_CHECK(!broadcast.count(p.name), "rank ", rank, ", ", what, ": ", p.name, " went through the broadcast");
        }
      }
      const int64_t wantBroadcasts = lo.path == LoadPath::kRank0Broadcast ? nonEp : 0;
      RANK_CHECK(broadcasts == wantBroadcasts, "rank ", rank, ", ", what, ": ", broadcasts, " broadcasts on ",
                 s.world->name(), ", expected ", wantBroadcasts, " (one per non-EP parameter)");
      if (&ckpt == &files.front()) {
        int64_t readTotal = 0;
        for (const auto& p : s.applied.params) readTotal += counting.elementsRead(p.name);
        stats << "\n  rank " << rank << " " << pathName << ": read " << readTotal << " elements, broadcast "
              << broadcasts << " tensors (" << (after.bytesSent - before.bytesSent) << " bytes sent, "
              << (after.bytesRecv - before.bytesRecv) << " received)";
      }
    }
  }
  std::cout << "rank " << rank << ": " << c.name << ": 3 paths x 3 checkpoints bitwise equal to the chunk slices of "
            << s.applied.params.size() << " parameters (" << epParams << " EP-sharded)" << stats.str() << std::endl;
  return 0;
}

class LoadingGloo : public ::testing::TestWithParam<LoadCase> {};

TEST_P(LoadingGloo, EveryPathGivesTheCheckpointSliceOnEveryRank) {
  const auto& c = GetParam();
  const auto files = writeCheckpoints(ref::ModelConfig::fromFile(sourcePath("cases/configs/" + c.config)), c.name);
  auto r = ranktest::runRanks(c.nranks, [&](const launch::RankContext&) { return loadAndCompare(c, files); }, 120);
  std::cout << r.out;
  ASSERT_TRUE(r.result.ok) << r.all();
  EXPECT_NE(r.out.find(c.name + ": 3 paths x 3 checkpoints bitwise equal"), std::string::npos) << r.all();
  std::filesystem::remove_all(std::filesystem::path(files[0].file).parent_path());
}

INSTANTIATE_TEST_SUITE_P(
    Meshes, LoadingGloo,
    ::testing::Values(LoadCase{"ep2", 2, R"({"ep":2})", "ep", "tiny_moe.json"},
                      LoadCase{"ep4", 4, R"({"ep":4})", "ep", "tiny_moe.json"},
                      LoadCase{"tp2_moe_tp", 2, R"({"tp":2})", "moe_tp", "tiny_moe.json"},
                      LoadCase{"ep2_tp2", 4, R"({"ep":2,"tp":2})", "ep_tp", "tiny_moe.json"},
                      LoadCase{"dp2_ep2", 4, R"({"dp":2,"ep":2})", "ep", "tiny_moe.json"},
                      LoadCase{"ep3_6experts", 3, R"({"ep":3})", "ep", "tiny_moe_6experts.json"}),
    [](const ::testing::TestParamInfo<LoadCase>& info) { return info.param.name; });

// --- the comparison and the loaders' own checks can fail ------------------

io::MapTensorSource memorySource(const ref::ParamMap& params, const std::string& what) {
  std::map<std::string, at::Tensor> m;
  for (const auto& kv : params) m[kv.key()] = kv.value();
  return io::MapTensorSource(m, what);
}

const LoadCase kEp2{"ep2", 2, R"({"ep":2})", "ep", "tiny_moe.json"};

TEST(LoadingGlooFails, RankZeroExpertsBroadcastOverEveryRankAreCaught) {
  // A planted wrong loader through the afterParam hook (what the mutant
  // ep_rank0_broadcast_overwrite will do): every rank gets rank 0's experts.
  // The comparison must flag rank 1's first expert tensor and pass rank 0.
  auto r = ranktest::runRanks(2, [](const launch::RankContext&) {
    const RankSetup s = setUp(kEp2);
    auto source = memorySource(s.full, "init");
    LoadOptions lo = optionsFor(s, LoadPath::kRank0Broadcast, source);
    lo.hooks.afterParam = [&](comm::Communicator& w, const plan::ParamPlacement& p, at::Tensor& local) {
      if (isEpSharded(p, s.mesh->shape())) w.broadcast(local, 0);
    };
    const auto diff = firstDifference(s, loadParams(lo));
    std::cout << "rank " << s.world->rank() << " diff: " << diff << std::endl;
    if (s.world->rank() == 0) RANK_CHECK(diff.empty(), diff);
    else
      RANK_CHECK(diff.find("rank 1: model.layers.1.mlp.experts.gate_up_proj [Shard(0)]: ") == 0 &&
                     diff.find("elements differ") != std::string::npos,
                 "rank 1 holding rank 0's experts was not reported: '", diff, "'");
    return 0;
  });
  ASSERT_TRUE(r.result.ok) << r.all();
  EXPECT_NE(r.out.find("rank 1 diff: rank 1: model.layers.1.mlp.experts.gate_up_proj"), std::string::npos) << r.all();
}

TEST(LoadingGlooFails, InitThenLoadThatMissesABoxIsAnError) {
  // tp=2 moe_tp: gate_up [E, 2I, H] is StridedShard(-2, 2), two boxes per
  // rank (gate rows, up rows). Skipping the up rows leaves half unwritten.
  const LoadCase tp2{"tp2_moe_tp", 2, R"({"tp":2})", "moe_tp", "tiny_moe.json"};
  auto r = ranktest::runRanks(2, [&](const launch::RankContext&) {
    const RankSetup s = setUp(tp2);
    auto source = memorySource(s.full, "init");
    LoadOptions lo = optionsFor(s, LoadPath::kInitThenLoad, source);
    const std::string victim = "model.layers.1.mlp.experts.gate_up_proj";
    lo.hooks.copyBox = [&](const plan::ParamPlacement& p, const std::vector<ref::IndexRange>& box) {
      return !(p.name == victim && box[1].start >= s.cfg.moeIntermediateSize);
    };
    // Local gate_up: E x (2I / tp) x H elements, half of them up rows.
    const int64_t localNumel = s.cfg.numExperts * (2 * s.cfg.moeIntermediateSize / 2) * s.cfg.hiddenSize;
    const std::string want = moe::str("rank ", s.world->rank(), ": init_then_load wrote ", localNumel / 2, " of ",
                                      localNumel, " elements of ", victim);
    try {
      loadParams(lo);
    } catch (const HarnessError& e) {
      std::cout << e.what() << std::endl;
      RANK_CHECK(std::string(e.what()).find(want) == 0, "got '", e.what(), "', expected it to start with '", want, "'");
      return 0;
    }
    RANK_CHECK(false, "a missed box of ", victim, " was not reported");
  });
  ASSERT_TRUE(r.result.ok) << r.all();
}

TEST(LoadingGlooFails, CheckpointShapeMismatchIsTheSameErrorOnEveryRankForEveryPath) {
  auto r = ranktest::runRanks(2, [](const launch::RankContext&) {
    const RankSetup s = setUp(kEp2);
    ref::ParamMap bad = ref::cloneParams(s.full);
    bad["model.embed_tokens.weight"] = bad["model.embed_tokens.weight"].narrow(0, 0, s.cfg.vocabSize - 1).clone();
    auto source = memorySource(bad, "bad checkpoint");
    const std::string want = moe::str("rank ", s.world->rank(), ": checkpoint tensor model.embed_tokens.weight");
    const std::string shapes = moe::str("has shape [", s.cfg.vocabSize - 1, ", ", s.cfg.hiddenSize,
                                        "], config expects [", s.cfg.vocabSize, ", ", s.cfg.hiddenSize, "]");
    for (const auto& path : loadPathNames()) {
      try {
        loadParams(optionsFor(s, parseLoadPath(path), source));
      } catch (const HarnessError& e) {
        const std::string m = e.what();
        RANK_CHECK(m.find(want) == 0 && m.find(shapes) != std::string::npos, path, ": '", m, "'");
        continue;
      }
      RANK_CHECK(false, path, ": a wrong checkpoint shape was not reported");
    }
    return 0;
  });
  ASSERT_TRUE(r.result.ok) << r.all();
}

// --- desync: a loader that issues different collectives on one rank ---------

const LoadCase kDp2Ep2{"dp2_ep2", 4, R"({"dp":2,"ep":2})", "ep", "tiny_moe.json"};

// The plan's parameters in load order, as the parent sees them (applyPlan is
// pure), to name what each rank must have called.
std::vector<plan::ParamPlacement> planParams(const LoadCase& c, int nranks) {
  const auto cfg = ref::ModelConfig::fromFile(sourcePath("cases/configs/" + c.config));
  mesh::MeshShape shape(mesh::DeviceMesh::parse(c.mesh), nranks);
  auto params = plan::applyPlan(plan::Plan::fromFile(sourcePath("cases/plans/" + c.plan + ".json")), cfg, shape).params;
  return params;
}

// Runs rank0_broadcast on the 4 ranks of dp2_ep2 with `plant` applied to
// world rank 1's options only. Every rank must fail with CollectiveMismatch
// (exit 3) within 10 s, not by the 30 s communication timeout nor the 20 s
// job timeout, and its flight recorder must show the failed call. Returns
// the ranks' stderr (where each prints the CollectiveMismatch message).
std::string expectDesync(const std::function<void(LoadOptions&, const RankSetup&)>& plant) {
  const auto t0 = std::chrono::steady_clock::now();
  auto run = ranktest::runRanks(4, [&](const launch::RankContext&) {
    const RankSetup s = setUp(kDp2Ep2);
    auto source = memorySource(s.full, "init");
    LoadOptions lo = optionsFor(s, LoadPath::kRank0Broadcast, source);
    if (s.world->rank() == 1) plant(lo, s);
    try {
      loadParams(lo);
    } catch (const comm::CollectiveMismatch& e) {
      std::cerr << "mismatch: " << e.what() << std::endl;
      return 3;
    }
    return 0;
  }, /*timeoutSeconds=*/20);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "desync reported after " << secs << " s" << std::endl;
  EXPECT_FALSE(run.result.ok) << run.all();
  EXPECT_FALSE(run.result.timedOut) << run.all();
  EXPECT_LT(secs, 10.0) << run.all();
  if (run.result.firstFailedRank >= 0) {
    const auto& first = run.result.ranks[run.result.firstFailedRank];
    // Under trace verification (the launcher's default, result.mismatch set)
    // a rank whose gloo transport failed on the mismatched buffers reports
    // the verdict from its terminate handler: exit 2 (communicator.h).
    EXPECT_TRUE(first.exited && (first.exitCode == 3 || (!run.result.mismatch.empty() && first.exitCode == 2)))
        << run.all();
  }
  for (const auto& t : run.result.traces) {
    EXPECT_FALSE(t.records.empty()) << "rank " << t.rank;
    if (t.records.empty()) continue;
    EXPECT_EQ(t.records.back().state, static_cast<int32_t>(comm::CallState::kFailed)) << "rank " << t.rank;
    EXPECT_NE(std::string(t.records.back().error).find("mismatch"), std::string::npos) << t.records.back().error;
  }
  return run.err;
}

// The broadcast fingerprint of parameter `p`: "broadcast#<seq>(float32, root 0, numel N)" without the seq.
std::string broadcastCall(const plan::ParamPlacement& p) {
  int64_t n = 1;
  for (auto d : p.globalShape) n *= d;
  return moe::str("(float32, root 0, numel ", n, ")");
}

std::vector<plan::ParamPlacement> broadcastParams() {
  std::vector<plan::ParamPlacement> out;
  const auto params = planParams(kDp2Ep2, 4);
  mesh::MeshShape shape(mesh::DeviceMesh::parse(kDp2Ep2.mesh), 4);
  for (const auto& p : params)
    if (!isEpSharded(p, shape)) out.push_back(p);
  return out;
}

// The call `who` ("rank 1" or "ranks 0,2,3") made according to the
// mismatch message: "<op>#<seq>(<args>)", or "" when not named.
std::string calledBy(const std::string& out, const std::string& who) {
  const std::string key = who + " called ";
  const auto at = out.find(key);
  if (at == std::string::npos) return "";
  const auto end = out.find(')', at);
  return end == std::string::npos ? "" : out.substr(at + key.size(), end + 1 - at - key.size());
}

// The mismatch names rank 1's call as op1#seq + args1 and the other ranks'
// as op0#seq + args0 (args "" = not checked).
void expectCalls(const std::string& out, const std::string& op1, const std::string& args1, const std::string& op0,
                 const std::string& args0) {
  EXPECT_NE(out.find("collective mismatch on group 'world'"), std::string::npos) << out;
  const std::string one = calledBy(out, "rank 1"), others = calledBy(out, "ranks 0,2,3");
  EXPECT_EQ(one.rfind(op1 + "#", 0), 0u) << "rank 1 called '" << one << "'\n" << out;
  EXPECT_EQ(others.rfind(op0 + "#", 0), 0u) << "ranks 0,2,3 called '" << others << "'\n" << out;
  auto endsWith = [](const std::string& s, const std::string& suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
  };
  EXPECT_TRUE(endsWith(one, args1)) << "rank 1 called '" << one << "', expected " << args1;
  EXPECT_TRUE(endsWith(others, args0)) << "ranks 0,2,3 called '" << others << "', expected " << args0;
}

TEST(LoadingDesync, RankSkippingTheFirstBroadcastIsACollectiveMismatch) {
  const auto b = broadcastParams();
  ASSERT_GE(b.size(), 2u);
  ASSERT_NE(broadcastCall(b[0]), broadcastCall(b[1]));  // else the shift would not show at once
  const std::string out = expectDesync([&](LoadOptions& lo, const RankSetup&) {
    const std::string skip = b[0].name;
    lo.hooks.broadcast = [skip](comm::Communicator& w, const plan::ParamPlacement& p, at::Tensor& t) {
      if (p.name != skip) w.broadcast(t, 0);
    };
  });
  // Rank 1 is already at the second tensor while the others send the first.
  expectCalls(out, "broadcast", broadcastCall(b[1]), "broadcast", broadcastCall(b[0]));
}

TEST(LoadingDesync, RankSkippingTheLastBroadcastIsCaughtByTheManifestBeforeTraining) {
  const auto b = broadcastParams();
  const std::string out = expectDesync([&](LoadOptions& lo, const RankSetup&) {
    const std::string skip = b.back().name;
    lo.hooks.broadcast = [skip](comm::Communicator& w, const plan::ParamPlacement& p, at::Tensor& t) {
      if (p.name != skip) w.broadcast(t, 0);
    };
  });
  // Rank 1 has moved on to the manifest all_gather; the others still send
  // the last tensor.
  expectCalls(out, "all_gather", "", "broadcast", broadcastCall(b.back()));
}

TEST(LoadingDesync, RankBroadcastingAnotherTensorIsACollectiveMismatch) {
  const auto b = broadcastParams();
  // Rank 1 sends q_proj's slot with k_proj's tensor (GQA: fewer rows).
  const auto q = std::find_if(b.begin(), b.end(), [](const auto& p) { return p.name == "model.layers.0.self_attn.q_proj.weight"; });
  const auto k = std::find_if(b.begin(), b.end(), [](const auto& p) { return p.name == "model.layers.0.self_attn.k_proj.weight"; });
  ASSERT_TRUE(q != b.end() && k != b.end());
  ASSERT_NE(broadcastCall(*q), broadcastCall(*k));
  const std::string out = expectDesync([&](LoadOptions& lo, const RankSetup&) {
    const auto kShape = k->globalShape;
    const std::string qName = q->name;
    lo.hooks.broadcast = [kShape, qName](comm::Communicator& w, const plan::ParamPlacement& p, at::Tensor& t) {
      if (p.name != qName) return w.broadcast(t, 0);
      at::Tensor other = at::empty(kShape, at::kFloat);
      w.broadcast(other, 0);
    };
  });
  expectCalls(out, "broadcast", broadcastCall(*k), "broadcast", broadcastCall(*q));
}

TEST(LoadingDesync, RankTakingItsExpertsFromRankZeroIsACollectiveMismatch) {
  // Rank 1 alone takes the EP experts from rank 0's broadcast (the other
  // initialisation path): one extra collective on one rank.
  const std::string out = expectDesync([](LoadOptions& lo, const RankSetup& s) {
    lo.hooks.afterParam = [&s](comm::Communicator& w, const plan::ParamPlacement& p, at::Tensor& local) {
      if (isEpSharded(p, s.mesh->shape())) w.broadcast(local, 0);
    };
  });
  // Rank 1's extra broadcast carries its local gate_up of layer 1 (E/ep
  // experts); the others are at the next non-EP tensor.
  const auto b = broadcastParams();
  const auto next = std::find_if(b.begin(), b.end(), [](const auto& p) {
    return p.name == "model.layers.1.input_layernorm.weight";
  });
  ASSERT_TRUE(next != b.end());
  const auto cfg = ref::ModelConfig::fromFile(sourcePath("cases/configs/tiny_moe.json"));
  const int64_t localGateUp = cfg.numExperts / 2 * 2 * cfg.moeIntermediateSize * cfg.hiddenSize;
  expectCalls(out, "broadcast", moe::str("(float32, root 0, numel ", localGateUp, ")"), "broadcast",
              broadcastCall(*next));
}

}  // namespace
}  // namespace moe::parallel
