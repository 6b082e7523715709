// Hub (per-expert) vs fused expert layouts.
#include <gtest/gtest.h>

#include "common/error.h"
#include "reference/io/expert_layout.h"
#include "reference/io/safetensors.h"
#include "reference/io/tests/test_util.h"

namespace moe::io {
namespace {

using testing::bitwiseEqual;
using testing::errorOf;
constexpr int64_t kLayers = 2, kExperts = 4, kInter = 3, kHidden = 5;

// Values encode their origin: (((layer * 10 + expert) * 10 + proj) * 10 +
// row) * 10 + col, exact in f32 and bf16 is not needed (we compare bitwise).
// proj: 0 gate, 1 up, 2 down. Shapes: gate/up [I, H], down [H, I].
at::Tensor hubWeight(int64_t layer, int64_t expert, int64_t proj, at::ScalarType type) {
  const int64_t rows = proj == 2 ? kHidden : kInter, cols = proj == 2 ? kInter : kHidden;
  at::Tensor t = at::empty({rows, cols}, at::kDouble);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      t[r][c] = static_cast<double>((((layer * 10 + expert) * 10 + proj) * 10 + r) * 10 + c);
  return t.to(type);
}

// The fused tensors built independently of the code under test.
// gate_up: [E, 2·I, H] (gate rows, then up rows), down: [E, H, I].
std::vector<std::pair<std::string, at::Tensor>> fusedCheckpoint(at::ScalarType type) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.emplace_back("model.embed_tokens.weight", at::arange(12, at::kFloat).reshape({3, 4}).to(type));
  for (int64_t l = 0; l < kLayers; ++l) {
    std::vector<at::Tensor> gateUp, down;
    for (int64_t e = 0; e < kExperts; ++e) {
      gateUp.push_back(at::cat({hubWeight(l, e, 0, type), hubWeight(l, e, 1, type)}, 0));
      down.push_back(hubWeight(l, e, 2, type));
    }
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.experts";
    out.emplace_back(p + ".gate_up_proj", at::stack(gateUp));
    out.emplace_back(p + ".down_proj", at::stack(down));
    out.emplace_back("model.layers." + std::to_string(l) + ".mlp.gate.weight",
                     at::full({kExperts, kHidden}, static_cast<double>(l), at::kFloat).to(type));
  }
  return out;
}

// The hub layout written by hand (not through toHubLayout).
std::map<std::string, at::Tensor> hubCheckpoint(at::ScalarType type) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : fusedCheckpoint(type))
    if (name.find(".experts.") == std::string::npos) out[name] = t;
  const char* projs[] = {"gate_proj", "up_proj", "down_proj"};
  for (int64_t l = 0; l < kLayers; ++l)
    for (int64_t e = 0; e < kExperts; ++e)
      for (int64_t p = 0; p < 3; ++p)
        out["model.layers." + std::to_string(l) + ".mlp.experts." + std::to_string(e) + "." +
            projs[p] + ".weight"] = hubWeight(l, e, p, type);
  return out;
}



#define EXPECT_ERROR_HAS(stmt, substring)                                     \
  do {                                                                        \
    const std::string msg_ = errorOf([&] { (void)(stmt); });                        \
    EXPECT_NE(msg_.find(substring), std::string::npos) << "message: " << msg_; \
  } while (0)

class ExpertLayoutFiles : public ::testing::TestWithParam<at::ScalarType> {
 protected:
  testing::TempDir dir_;
};

TEST_P(ExpertLayoutFiles, HubAndFusedFilesGiveBitwiseIdenticalFusedTensors) {
  const at::ScalarType type = GetParam();
  const auto fused = fusedCheckpoint(type);
  writeSafetensors(dir_.file("fused"), fused);
  writeSafetensors(dir_.file("hub"), toHubLayout(fused));

  SafetensorsReader fusedFile(dir_.file("fused")), hubFile(dir_.file("hub"));
  EXPECT_EQ(detectExpertLayout(fusedFile), ExpertLayout::kFused);
  EXPECT_EQ(detectExpertLayout(hubFile), ExpertLayout::kHub);
  // The hub file holds exactly the hand-built hub tensors.
  const auto hub = hubCheckpoint(type);
  ASSERT_EQ(hubFile.names().size(), hub.size());
  for (const auto& [name, t] : hub) EXPECT_TRUE(bitwiseEqual(hubFile.read(name), t)) << name;

  const auto fromFused = readAllFused(fusedFile);
  const auto fromHub = readAllFused(hubFile);
  ASSERT_EQ(fromFused.size(), fused.size());
  ASSERT_EQ(fromHub.size(), fused.size());
  for (const auto& [name, t] : fused) {
    EXPECT_TRUE(bitwiseEqual(fromFused.at(name), t)) << name;
    EXPECT_TRUE(bitwiseEqual(fromHub.at(name), t)) << name;
  }
}

// Mixtral's hub naming (transformers 5.25 save_pretrained): the block is
// block_sparse_moe (router included) and the projections are w1 (gate),
// w3 (up), w2 (down); written by hand here, not through toHubLayout.
TEST_P(ExpertLayoutFiles, MixtralHubNamingConvertsBothWays) {
  const at::ScalarType type = GetParam();
  const HubExpertNames mixtral{"block_sparse_moe", {"w1", "w3", "w2"}};
  const auto fused = fusedCheckpoint(type);
  std::map<std::string, at::Tensor> hand;
  hand["model.embed_tokens.weight"] = fused[0].second;
  const char* projs[] = {"w1", "w3", "w2"};
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string b = "model.layers." + std::to_string(l) + ".block_sparse_moe.";
    hand[b + "gate.weight"] = at::full({kExperts, kHidden}, static_cast<double>(l), at::kFloat).to(type);
    for (int64_t e = 0; e < kExperts; ++e)
      for (int64_t p = 0; p < 3; ++p)
        hand[b + "experts." + std::to_string(e) + "." + projs[p] + ".weight"] = hubWeight(l, e, p, type);
  }
  // fused -> hub: exactly the hand-written tensors.
  writeSafetensors(dir_.file("mixtral"), toHubLayout(fused, "writer", mixtral));
  SafetensorsReader file(dir_.file("mixtral"));
  ASSERT_EQ(file.names().size(), hand.size());
  for (const auto& [name, t] : hand) EXPECT_TRUE(bitwiseEqual(file.read(name), t)) << name;
  // hub -> fused: the in-memory names and values.
  EXPECT_EQ(detectExpertLayout(file, mixtral), ExpertLayout::kHub);
  const auto back = readAllFused(file, {/*numExperts=*/kExperts, mixtral});
  ASSERT_EQ(back.size(), fused.size());
  for (const auto& [name, t] : fused) EXPECT_TRUE(bitwiseEqual(back.at(name), t)) << name;
  // Read with Qwen3-MoE's naming, w1 is an unknown per-expert tensor.
  EXPECT_ERROR_HAS(FusedExpertView(file), "w1.weight");
}

TEST_P(ExpertLayoutFiles, ExpertSliceOfAHubFileReadsOnlyThoseExperts) {
  const at::ScalarType type = GetParam();
  const auto fused = fusedCheckpoint(type);
  writeSafetensors(dir_.file("hub"), toHubLayout(fused));
  SafetensorsReader file(dir_.file("hub"));
  FusedExpertView view(file, {/*numExperts=*/kExperts});
  EXPECT_EQ(view.layout(), ExpertLayout::kHub);
  const std::string gateUp = fusedGateUpName(expertsPrefix(1));
  const std::string down = fusedDownName(expertsPrefix(1));
  EXPECT_EQ(view.shape(gateUp), (std::vector<int64_t>{kExperts, 2 * kInter, kHidden}));
  EXPECT_EQ(view.shape(down), (std::vector<int64_t>{kExperts, kHidden, kInter}));
  const at::Tensor fullGateUp = fused[4].second, fullDown = fused[5].second;
  ASSERT_EQ(fused[4].first, gateUp);

  const uint64_t before = file.bytesRead();
  at::Tensor gu = view.readSlice(gateUp, /*dim=*/0, /*start=*/1, /*length=*/2);
  at::Tensor dn = view.readSlice(down, /*dim=*/0, /*start=*/1, /*length=*/2);
  EXPECT_TRUE(bitwiseEqual(gu, fullGateUp.narrow(0, 1, 2)));
  EXPECT_TRUE(bitwiseEqual(dn, fullDown.narrow(0, 1, 2)));
  // 2 experts × (gate + up + down), each I·H elements.
  EXPECT_EQ(file.bytesRead() - before,
            static_cast<uint64_t>(2 * 3 * kInter * kHidden * c10::elementSize(type)));
}

TEST_P(ExpertLayoutFiles, AnyFusedRangeOfAHubFileMatchesTheFusedTensor) {
  const at::ScalarType type = GetParam();
  const auto fused = fusedCheckpoint(type);
  MapTensorSource hub(hubCheckpoint(type), "hub map");
  FusedExpertView view(hub);
  const std::string gateUp = fusedGateUpName(expertsPrefix(0));
  const at::Tensor full = fused[1].second;  // [E, 2I, H]
  ASSERT_EQ(fused[1].first, gateUp);
  // Row ranges inside gate, inside up, across the boundary, empty, whole.
  const std::vector<SliceRange> rows = {{0, 2}, {3, 3}, {2, 2}, {1, 4}, {4, 0}, {0, 6}};
  for (const SliceRange& r : rows)
    for (const SliceRange& c : {SliceRange{0, kHidden}, SliceRange{1, 3}}) {
      at::Tensor got = view.readSlice(gateUp, {{1, 3}, r, c});
      EXPECT_TRUE(bitwiseEqual(got, full.narrow(0, 1, 3).narrow(1, r.start, r.length).narrow(2, c.start, c.length)))
          << "rows " << r.start << "+" << r.length << " cols " << c.start << "+" << c.length;
    }
  const at::Tensor fullDown = fused[2].second;  // [E, H, I]
  at::Tensor got = view.readSlice(fusedDownName(expertsPrefix(0)), {{0, 4}, {1, 3}, {2, 1}});
  EXPECT_TRUE(bitwiseEqual(got, fullDown.narrow(1, 1, 3).narrow(2, 2, 1)));
  EXPECT_EQ(view.readSlice(gateUp, 0, 2, 0).sizes().vec(),
            (std::vector<int64_t>{0, 2 * kInter, kHidden}));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ExpertLayoutFiles, ::testing::Values(at::kFloat, at::kBFloat16),
                         [](const ::testing::TestParamInfo<at::ScalarType>& info) {
                           return std::string(c10::toString(info.param));
                         });

TEST(ExpertLayout, DenseCheckpointHasNoExperts) {
  MapTensorSource dense({{"model.layers.0.mlp.gate_proj.weight", at::zeros({2, 2})}});
  EXPECT_EQ(detectExpertLayout(dense), ExpertLayout::kNone);
  EXPECT_EQ(FusedExpertView(dense).names(), dense.names());
}

TEST(ExpertLayout, HubErrorsNameTheModuleAndTensor) {
  const std::string p = expertsPrefix(1);
  auto hub = hubCheckpoint(at::kFloat);
  auto without = [&](const std::vector<std::string>& names) {
    auto copy = hub;
    for (const std::string& n : names) copy.erase(n);
    return MapTensorSource(copy, "ckpt");
  };
  EXPECT_ERROR_HAS(FusedExpertView(without({hubExpertName(p, 2, "gate_proj"),
                                            hubExpertName(p, 2, "up_proj"),
                                            hubExpertName(p, 2, "down_proj")})),
                   "ckpt: model.layers.1.mlp.experts: expert 2 is missing (found 3 experts, the highest is 3)");
  EXPECT_ERROR_HAS(FusedExpertView(without({hubExpertName(p, 3, "up_proj")})),
                   "ckpt: tensor 'model.layers.1.mlp.experts.3.up_proj.weight' is missing");
  EXPECT_ERROR_HAS(FusedExpertView(MapTensorSource(hub, "ckpt"), {/*numExperts=*/3}),
                   "model.layers.0.mlp.experts: has 4 experts but 3 are expected (extra experts 3..3)");
  EXPECT_ERROR_HAS(FusedExpertView(MapTensorSource(hub, "ckpt"), {/*numExperts=*/6}),
                   "has 4 experts but 6 are expected (experts 4..5 are missing)");

  auto bad = hub;
  bad[hubExpertName(p, 2, "down_proj")] = at::zeros({kHidden, kInter + 1});
  EXPECT_ERROR_HAS(FusedExpertView(MapTensorSource(bad, "ckpt")),
                   "tensor 'model.layers.1.mlp.experts.2.down_proj.weight' has shape [5, 4] but [5, 3] is expected");
  bad = hub;
  bad[hubExpertName(p, 1, "up_proj")] = at::zeros({kInter, kHidden}, at::kDouble);
  EXPECT_ERROR_HAS(FusedExpertView(MapTensorSource(bad, "ckpt")),
                   "tensor 'model.layers.1.mlp.experts.1.up_proj.weight' is Double but");
  bad = hub;
  bad[p + ".0.gate_proj.bias"] = at::zeros({kInter});
  EXPECT_ERROR_HAS(detectExpertLayout(MapTensorSource(bad, "ckpt")),
                   "unexpected per-expert tensor 'model.layers.1.mlp.experts.0.gate_proj.bias'");
  bad = hub;
  bad[p + ".07.gate_proj.weight"] = at::zeros({kInter, kHidden});
  EXPECT_ERROR_HAS(FusedExpertView(MapTensorSource(bad, "ckpt")), "unexpected per-expert tensor");
}

TEST(ExpertLayout, FusedAndMixedErrors) {
  std::map<std::string, at::Tensor> fused;
  for (const auto& [n, t] : fusedCheckpoint(at::kFloat)) fused[n] = t;
  const std::string p = expertsPrefix(0);

  auto mixed = fused;
  mixed[hubExpertName(expertsPrefix(5), 0, "gate_proj")] = at::zeros({kInter, kHidden});
  EXPECT_ERROR_HAS(detectExpertLayout(MapTensorSource(mixed, "ckpt")), "ckpt: checkpoint mixes expert layouts");

  auto bad = fused;
  bad.erase(fusedDownName(p));
  EXPECT_ERROR_HAS(FusedExpertView(MapTensorSource(bad, "ckpt")),
                   "tensor 'model.layers.0.mlp.experts.gate_up_proj' has no partner 'model.layers.0.mlp.experts.down_proj'");
  bad = fused;
  bad[fusedDownName(p)] = at::zeros({kExperts, kHidden, kInter + 1});
  EXPECT_ERROR_HAS(FusedExpertView(MapTensorSource(bad, "ckpt")),
                   "tensor 'model.layers.0.mlp.experts.down_proj' has shape [4, 5, 4] but "
                   "'model.layers.0.mlp.experts.gate_up_proj' [4, 6, 5] implies [E, H, I] = [4, 5, 3]");
  bad = fused;
  bad[fusedGateUpName(p)] = at::zeros({kExperts, 7, kHidden});
  EXPECT_ERROR_HAS(FusedExpertView(MapTensorSource(bad, "ckpt")), "an even middle dim");
  EXPECT_ERROR_HAS(FusedExpertView(MapTensorSource(fused, "ckpt"), {/*numExperts=*/2}),
                   "has 4 experts but 2 are expected (extra experts 2..3)");

  std::vector<std::pair<std::string, at::Tensor>> lonely = {{fusedGateUpName(p), fused.at(fusedGateUpName(p))}};
  EXPECT_ERROR_HAS(toHubLayout(lonely, "writer"), "writer: tensor 'model.layers.0.mlp.experts.gate_up_proj' has no partner");
}

}  // namespace
}  // namespace moe::io
