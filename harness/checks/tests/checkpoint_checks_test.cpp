// checkpoint_complete and resume_parity on hand-built checkpoints and states
// (no ranks): each passes on correct input and fails, naming the problem, on
// the planted one (experts saved under their local index, the marker written
// before the data, a corrupt piece, a missing moment; a wrong loaded moment,
// a wrong loss).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "harness/checks/checkpoint_checks.h"
#include "reference/io/dist_checkpoint.h"

namespace moe::checks {
namespace {
namespace fs = std::filesystem;

struct Tmp {
  std::string path;
  Tmp() {
    std::string p = (fs::temp_directory_path() / "moe_ckcheck_XXXXXX").string();
    path = ::mkdtemp(p.data());
  }
  ~Tmp() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

at::Tensor origin(std::vector<int64_t> shape, double base = 0) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return (at::arange(n, at::kFloat) + base).reshape(shape);
}

io::CheckpointPiece rows(const std::string& name, const at::Tensor& full, int64_t start, int64_t len, int64_t at) {
  std::vector<int64_t> off(static_cast<size_t>(full.dim()), 0);
  off[0] = at;
  return {name, off, full.narrow(0, start, len).clone()};
}

// Experts "e" [4, 2, 3] over 2 ranks (2 each), dense "d" [5] on rank 0.
// localIndex: each rank records its experts at offset 0 (the bug).
void save(const std::string& dir, bool localIndex = false, bool markerFirst = false) {
  const auto e = origin({4, 2, 3}), d = origin({5}, 100);
  io::writeIntent(dir, 2, 1);
  if (markerFirst) io::writeCompleteMarker(dir);
  io::writeRankPieces(dir, 0, {rows("e", e, 0, 2, 0), rows("d", d, 0, 5, 0)});
  io::writeRankPieces(dir, 1, {rows("e", e, 2, 2, localIndex ? 0 : 2)});
  io::finalizeDistCheckpoint(dir, 2, {{"world_size", 2}, {"step", 1}}, {{"e", {4, 2, 3}}, {"d", {5}}});
}

const std::vector<std::string> kTensors{"d", "e"}, kExperts{"e"};

TEST(CheckpointComplete, PassesOnACompleteCheckpoint) {
  Tmp t;
  save(t.path);
  nlohmann::json m;
  EXPECT_EQ(checkpointProblem(t.path, kTensors, kExperts, m), "");
  EXPECT_EQ(m["pieces"], 3);
  EXPECT_EQ(m["bytes"], (24 + 5) * 4);
}

TEST(CheckpointComplete, FailsOnExpertsSavedUnderTheirLocalIndex) {
  Tmp t;
  save(t.path, /*localIndex=*/true);
  nlohmann::json m;
  const auto p = checkpointProblem(t.path, kTensors, kExperts, m);
  EXPECT_NE(p.find("expert keys of 'e' are not unique and complete: experts 0-1 written more than once, experts "
                   "2-3 missing"),
            std::string::npos)
      << p;
}

TEST(CheckpointComplete, FailsWhenTheMarkerPrecedesTheData) {
  Tmp t;
  save(t.path, false, /*markerFirst=*/true);
  nlohmann::json m;
  const auto p = checkpointProblem(t.path, kTensors, kExperts, m);
  EXPECT_NE(p.find("COMPLETE was written before rank0.safetensors"), std::string::npos) << p;
}

TEST(CheckpointComplete, FailsOnACorruptPieceAndAMissingTensor) {
  Tmp t;
  save(t.path);
  {
    std::fstream f(t.path + "/rank1.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-2, std::ios::end);
    f.put('\x7f');
  }
  nlohmann::json m;
  auto p = checkpointProblem(t.path, kTensors, kExperts, m);
  EXPECT_NE(p.find("rank1.safetensors: tensor 'e': piece e@2,0,0 content hash"), std::string::npos) << p;
  p = checkpointProblem(t.path, {"d", "e", "optimizer.exp_avg/d"}, kExperts, m);
  EXPECT_NE(p.find("tensor 'optimizer.exp_avg/d' is not in the checkpoint"), std::string::npos) << p;
}

ParamShard whole(const std::string& name, const at::Tensor& t) {
  ParamShard s;
  s.name = name;
  s.local = t;
  s.globalShape = t.sizes().vec();
  s.placements = {ref::Placement::replicate()};
  return s;
}

TEST(ResumeParity, PassesOnTheReferenceStateAndFailsOnAWrongMomentOrLoss) {
  const auto w = origin({3, 2}), m = origin({3, 2}, 0.5);
  io::MapTensorSource refState({{"w", w}, {"optimizer.exp_avg/w", m}});
  io::MapTensorSource refFinal({{"w", w}});
  std::vector<StepRecord> steps(2), refSteps(2);
  for (int i = 0; i < 2; ++i) {
    steps[i].step = refSteps[i].step = 3 + i;
    steps[i].loss = refSteps[i].loss = 4.0 - i;
  }
  std::vector<ParamShard> state{whole("w", w), whole("optimizer.exp_avg/w", m)}, fin{whole("w", w)};
  ResumeParityInputs in;
  in.meshSizes = {1};
  in.meshCoords = {0};
  in.resumedFromStep = 2;
  in.resumedState = &state;
  in.referenceStateAtResume = &refState;
  in.runSteps = &steps;
  in.referenceSteps = &refSteps;
  in.finalParams = &fin;
  in.referenceParams = &refFinal;
  nlohmann::json measured;
  EXPECT_EQ(resumeParityProblem(in, {}, measured), "");
  EXPECT_EQ(measured["loaded_state_max_abs_diff"], 0.0);
  // A moment that was not resharded: another slice's values.
  std::vector<ParamShard> wrong{whole("w", w), whole("optimizer.exp_avg/w", m.flip(0).contiguous())};
  in.resumedState = &wrong;
  auto p = resumeParityProblem(in, {}, measured);
  EXPECT_NE(p.find("optimizer.exp_avg/w"), std::string::npos) << p;
  in.resumedState = &state;
  steps[1].loss += 1e-3;
  p = resumeParityProblem(in, {}, measured);
  EXPECT_NE(p.find("step 4 (resumed at 2): loss"), std::string::npos) << p;
}

}  // namespace
}  // namespace moe::checks
