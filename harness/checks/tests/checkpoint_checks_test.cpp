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
#include "reference/io/safetensors.h"
#include "reference/model/init.h"
#include "reference/parallel/dist_checkpoint.h"
#include "reference/parallel/hf_checkpoint.h"
#include "reference/train/hub_naming.h"

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

// The AdamW allowance of the loaded state comes from the gradients the
// inputs give (the reference's GLOBAL step 1, whose derivation it follows):
// an element whose step-1 gradient is ~0 may legitimately be 3e-6 off after
// k steps, while a later step's large gradient at the same element would
// allow ~1e-14 (the tp=2 save -> tp=2 resume false failure).
TEST(ResumeParity, TheLoadedStateAllowanceComesFromTheStep1Gradients) {
  const auto w = at::zeros({2, 2});
  auto off = w.clone();
  off[1][1] = 3e-6;
  io::MapTensorSource refState({{"w", w}});
  std::vector<StepRecord> steps(1), refSteps(1);
  steps[0].step = refSteps[0].step = 3;
  std::vector<ParamShard> state{whole("w", off)};
  ResumeParityInputs in;
  in.meshSizes = {1};
  in.meshCoords = {0};
  in.resumedFromStep = 2;
  in.resumedState = &state;
  in.referenceStateAtResume = &refState;
  in.runSteps = &steps;
  in.referenceSteps = &refSteps;
  ParityCheckOptions o;
  o.optimizer = {/*lr=*/1e-3, /*eps=*/1e-8, /*maxGradNorm=*/0};
  nlohmann::json measured;
  EXPECT_NE(resumeParityProblem(in, o, measured), "") << "no gradients: no allowance, 3e-6 > atol 1e-6";
  io::MapTensorSource step1({{"w", at::zeros({2, 2})}});  // ill-conditioned at step 1
  in.referenceGrads = &step1;
  EXPECT_EQ(resumeParityProblem(in, o, measured), "");
  io::MapTensorSource large({{"w", at::ones({2, 2})}});  // well conditioned: no allowance
  in.referenceGrads = &large;
  const auto p = resumeParityProblem(in, o, measured);
  EXPECT_NE(p.find("state loaded at the resume step"), std::string::npos) << p;
}

// The consolidated Hugging Face layout: a tiny Qwen3-MoE state written by
// writeHfCheckpoint passes hfCheckpointProblem and reads back equal through
// HfCheckpointSource; a flipped byte, a missing expert and a missing moment
// each fail, naming the problem.
struct HfState {
  ref::ModelConfig cfg = ref::tinyTestConfig();
  std::map<std::string, at::Tensor> fused;
  std::vector<std::string> params, expected;
  HfState() {
    const auto init = ref::initParameters(cfg, 3);
    for (const auto& kv : init) {
      params.push_back(kv.key());
      fused[kv.key()] = kv.value();
      fused[std::string(parallel::kExpAvgPrefix) + kv.key()] = kv.value() * 0.5;
      fused[std::string(parallel::kExpAvgSqPrefix) + kv.key()] = kv.value().abs();
    }
    for (const auto& [k, v] : fused) expected.push_back(k);
  }
  void write(const std::string& dir) const {
    parallel::HfWriteOptions o;
    o.dir = dir;
    o.info = {{"step", 2}, {"data_position", 3}};
    parallel::writeHfCheckpoint(io::MapTensorSource(fused), cfg, params, o);
  }
};

TEST(HfCheckpoint, WrittenStatePassesAndReadsBackEqual) {
  Tmp t;
  const HfState s;
  const std::string dir = t.path + "/ckpt";
  s.write(dir);
  EXPECT_TRUE(parallel::isHfCheckpoint(dir));
  EXPECT_FALSE(fs::exists(dir + ".tmp"));
  // Per-expert hub keys in the model file, fused names in the source.
  const io::SafetensorsReader model(dir + "/model.safetensors");
  EXPECT_TRUE(model.has("model.layers.1.mlp.experts.3.down_proj.weight"));
  EXPECT_FALSE(model.has("model.layers.1.mlp.experts.gate_up_proj"));
  nlohmann::json m;
  EXPECT_EQ(hfCheckpointProblem(dir, ref::fusedViewOptions(s.cfg), s.expected, m), "");
  EXPECT_EQ(m["tensors"], s.expected.size());
  const parallel::HfCheckpointSource src(dir, ref::fusedViewOptions(s.cfg));
  EXPECT_EQ(src.info()["data_position"], 3);
  for (const auto& [k, v] : s.fused) EXPECT_TRUE(at::equal(src.read(k), v)) << k;
  // Rows 1..2 of experts 2..3 of gate_up: the slice a tp/ep rank reads.
  const std::string gu = "model.layers.1.mlp.experts.gate_up_proj";
  EXPECT_TRUE(at::equal(src.readSlice(gu, {{2, 2}, {1, 2}}), s.fused.at(gu).slice(0, 2, 4).slice(1, 1, 3)));
  // Saving again replaces it whole.
  s.write(dir);
  EXPECT_EQ(hfCheckpointProblem(dir, ref::fusedViewOptions(s.cfg), s.expected, m), "");
}

TEST(HfCheckpoint, FailsOnACorruptTensorAMissingExpertAndAMissingMoment) {
  Tmp t;
  const HfState s;
  const std::string dir = t.path + "/ckpt";
  s.write(dir);
  const auto view = ref::fusedViewOptions(s.cfg);
  nlohmann::json m;
  auto p = hfCheckpointProblem(dir, view, [&] {
    auto e = s.expected;
    e.push_back("optimizer.exp_avg/model.extra.weight");
    return e;
  }(), m);
  EXPECT_NE(p.find("tensor 'optimizer.exp_avg/model.extra.weight' is not in the checkpoint"), std::string::npos) << p;
  {
    std::fstream f(dir + "/optimizer.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  p = hfCheckpointProblem(dir, view, s.expected, m);
  EXPECT_NE(p.find("content hash"), std::string::npos) << p;
  EXPECT_NE(p.find("trainer_state.json says"), std::string::npos) << p;
  // Expert 1 of layer 1 dropped from the model file.
  s.write(dir);
  {
    const io::SafetensorsReader r(dir + "/model.safetensors");
    std::vector<std::pair<std::string, at::Tensor>> kept;
    for (const auto& n : r.names())
      if (n.find("mlp.experts.1.") == std::string::npos) kept.emplace_back(n, r.read(n));
    io::writeSafetensors(dir + "/model.safetensors", kept);
  }
  p = hfCheckpointProblem(dir, view, s.expected, m);
  EXPECT_NE(p.find("model.layers.1.mlp.experts"), std::string::npos) << p;
  EXPECT_NE(p.find("1"), std::string::npos) << p;
  // Not a consolidated checkpoint at all.
  EXPECT_NE(hfCheckpointProblem(t.path, view, s.expected, m).find("no trainer_state.json"), std::string::npos);
}

}  // namespace
}  // namespace moe::checks
