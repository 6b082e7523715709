// Hugging Face sharded checkpoints (sharded_safetensors.h): the writer's
// files and index, reading them back bit for bit against the single-file
// reader, slices that read only their bytes, the hub layout through
// FusedExpertView, openCheckpoint's accepted forms, and one test per bad
// input of the index policy (each message names the file, the tensor or
// field, and the value).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "reference/io/expert_layout.h"
#include "reference/io/nonfinite.h"
#include "reference/io/safetensors.h"
#include "reference/io/sharded_safetensors.h"
#include "reference/io/tests/test_util.h"

namespace moe::io {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using testing::bitwiseEqual;
using testing::errorOf;
using testing::readBytes;
using testing::TempDir;
using testing::writeBytes;

using TensorList = std::vector<std::pair<std::string, at::Tensor>>;

// Values encode their origin: tensor k, element i holds 1000·k + i.
at::Tensor origin(int64_t k, std::vector<int64_t> shape, at::ScalarType type = at::kFloat) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return (at::arange(n, at::kDouble) + 1000.0 * k).reshape(shape).to(type);
}

// `count` tensors "t00", "t01", ... of 16 floats (64 bytes) each.
TensorList equalTensors(int count) {
  TensorList out;
  for (int k = 0; k < count; ++k) out.emplace_back(str("t", k < 10 ? "0" : "", k), origin(k, {4, 4}));
  return out;
}

json readJson(const std::string& path) { return json::parse(readBytes(path)); }

void expectSameTensors(const TensorSource& source, const TensorList& tensors) {
  ASSERT_EQ(source.names().size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(source.has(name)) << name;
    EXPECT_EQ(source.shape(name), t.sizes().vec()) << name;
    EXPECT_EQ(source.scalarType(name), t.scalar_type()) << name;
    EXPECT_TRUE(bitwiseEqual(source.read(name), t)) << name;
  }
}

TEST(ShardedSafetensors, OneShardWritesAnIndexAndReadsBack) {
  TempDir dir;
  TensorList tensors = equalTensors(3);
  tensors.emplace_back("bf16", origin(7, {3, 5}, at::kBFloat16));
  tensors.emplace_back("ids", origin(8, {6}, at::kLong));
  const auto files = writeShardedSafetensors(dir.file("ckpt"), tensors, /*maxShardBytes=*/1 << 20);
  ASSERT_EQ(files, std::vector<std::string>{"model-00001-of-00001.safetensors"});
  EXPECT_FALSE(fs::exists(dir.file("ckpt/model.safetensors")));

  const json index = readJson(dir.file("ckpt/model.safetensors.index.json"));
  // 3·64 + 15·2 + 6·8 bytes, counted by hand.
  EXPECT_EQ(index["metadata"]["total_size"], 3 * 64 + 30 + 48);
  ASSERT_EQ(index["weight_map"].size(), 5u);
  for (const auto& kv : tensors) EXPECT_EQ(index["weight_map"][kv.first], files[0]) << kv.first;

  auto source = openCheckpoint(dir.file("ckpt"));
  EXPECT_EQ(source->where(), dir.file("ckpt/model.safetensors.index.json"));
  expectSameTensors(*source, tensors);
  EXPECT_EQ(source->whereOf("ids"), dir.file("ckpt/model-00001-of-00001.safetensors"));
}

TEST(ShardedSafetensors, ThreeShardsSplitGreedilyInOrder) {
  TempDir dir;
  const TensorList tensors = equalTensors(6);  // 64 bytes each
  const auto files = writeShardedSafetensors(dir.file("ckpt"), tensors, /*maxShardBytes=*/128);
  const std::vector<std::string> expected = {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                             "model-00003-of-00003.safetensors"};
  ASSERT_EQ(files, expected);
  const json index = readJson(dir.file("ckpt/model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 6 * 64);
  for (int k = 0; k < 6; ++k) EXPECT_EQ(index["weight_map"][tensors[k].first], expected[k / 2]) << k;
  // Each shard is an ordinary safetensors file holding its two tensors.
  for (int s = 0; s < 3; ++s) {
    SafetensorsReader shard(dir.file("ckpt/" + expected[s]));
    EXPECT_EQ(shard.names(), (std::vector<std::string>{tensors[2 * s].first, tensors[2 * s + 1].first}));
  }
  ShardedSafetensorsSource source(dir.file("ckpt/model.safetensors.index.json"));
  EXPECT_EQ(source.shards().size(), 3u);
  expectSameTensors(source, tensors);
  EXPECT_EQ(source.whereOf("t05"), dir.file("ckpt/" + expected[2]));
}

TEST(ShardedSafetensors, ManyShardsAndATensorOverTheLimitGetsItsOwnShard) {
  TempDir dir;
  // Every tensor is over a 1-byte limit: one shard each.
  const TensorList many = equalTensors(12);
  const auto files = writeShardedSafetensors(dir.file("many"), many, /*maxShardBytes=*/1);
  ASSERT_EQ(files.size(), 12u);
  EXPECT_EQ(files.back(), "model-00012-of-00012.safetensors");
  expectSameTensors(*openCheckpoint(dir.file("many")), many);

  // 64, 64, 400, 64 bytes under a 128-byte limit: [a, b], [big], [c].
  const TensorList mixed = {{"a", origin(0, {16})}, {"b", origin(1, {16})}, {"big", origin(2, {100})},
                            {"c", origin(3, {16})}};
  const auto parts = writeShardedSafetensors(dir.file("mixed"), mixed, /*maxShardBytes=*/128);
  ASSERT_EQ(parts.size(), 3u);
  const json index = readJson(dir.file("mixed/model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"]["a"], parts[0]);
  EXPECT_EQ(index["weight_map"]["b"], parts[0]);
  EXPECT_EQ(index["weight_map"]["big"], parts[1]);
  EXPECT_EQ(index["weight_map"]["c"], parts[2]);
  expectSameTensors(*openCheckpoint(dir.file("mixed/model.safetensors.index.json")), mixed);
}

TEST(ShardedSafetensors, SlicesMatchTheSingleFileBitForBitAndReadOnlyTheirBytes) {
  TempDir dir;
  const TensorList tensors = {{"w", origin(1, {6, 5, 4})},
                              {"b16", origin(2, {8, 6}, at::kBFloat16)},
                              {"v", origin(3, {10})},
                              {"h", origin(4, {7, 3}, at::kHalf)}};
  writeSafetensors(dir.file("single.safetensors"), tensors);
  // w (480 bytes) alone; b16 (96); v (40) and h (42).
  writeShardedSafetensors(dir.file("sharded"), tensors, /*maxShardBytes=*/100);
  SafetensorsReader single(dir.file("single.safetensors"));
  ShardedSafetensorsSource sharded(dir.file("sharded/model.safetensors.index.json"));
  ASSERT_EQ(sharded.shards().size(), 3u);
  const std::vector<std::pair<std::string, std::vector<SliceRange>>> slices = {
      {"w", {{1, 3}}},         {"w", {{0, 6}, {2, 2}}}, {"w", {{5, 1}, {0, 5}, {1, 2}}},
      {"w", {{2, 0}}},         {"b16", {{3, 5}, {1, 4}}}, {"v", {{9, 1}}},
      {"h", {{0, 7}, {2, 1}}}, {"h", {}}};
  for (const auto& [name, ranges] : slices) {
    const at::Tensor a = single.readSlice(name, ranges), b = sharded.readSlice(name, ranges);
    EXPECT_TRUE(bitwiseEqual(a, b)) << name;
  }
  // After opening, a slice costs exactly its bytes: rows 1..2 of w.
  const uint64_t before = sharded.bytesRead();
  sharded.readSlice("w", 0, 1, 2);
  EXPECT_EQ(sharded.bytesRead() - before, 2u * 5 * 4 * 4);
}

TEST(ShardedSafetensors, HubLayoutShardsLoadThroughFusedExpertView) {
  TempDir dir;
  // Two MoE layers, E=4, I=3, H=5, fused as the model holds them.
  TensorList fused = {{"model.embed_tokens.weight", origin(0, {8, 5})}};
  for (int64_t layer = 0; layer < 2; ++layer) {
    const std::string p = expertsPrefix(layer);
    fused.emplace_back(fusedGateUpName(p), origin(10 + layer, {4, 6, 5}));
    fused.emplace_back(fusedDownName(p), origin(20 + layer, {4, 5, 3}));
  }
  // Per-expert tensors of 60 bytes under a 128-byte limit spread every
  // module's experts over several shards.
  writeShardedSafetensors(dir.file("hub"), toHubLayout(fused), /*maxShardBytes=*/128);
  writeSafetensors(dir.file("single.safetensors"), toHubLayout(fused));
  auto sharded = openCheckpoint(dir.file("hub"));
  ASSERT_GT(dynamic_cast<const ShardedSafetensorsSource&>(*sharded).shards().size(), 10u);
  ASSERT_TRUE(sharded->has(hubExpertName(expertsPrefix(1), 3, "down_proj")));
  FusedExpertView view(*sharded, FusedViewOptions{/*numExperts=*/4});
  EXPECT_EQ(view.layout(), ExpertLayout::kHub);
  SafetensorsReader singleFile(dir.file("single.safetensors"));
  FusedExpertView singleView(singleFile);
  for (const auto& [name, t] : fused) {
    EXPECT_TRUE(bitwiseEqual(view.read(name), t)) << name;
    EXPECT_TRUE(bitwiseEqual(view.readSlice(name, 0, 1, 2), singleView.readSlice(name, 0, 1, 2))) << name;
  }
  const std::string up = fusedGateUpName(expertsPrefix(0));
  EXPECT_TRUE(bitwiseEqual(view.readSlice(up, {{2, 2}, {3, 3}}), fused[1].second.slice(0, 2, 4).slice(1, 3, 6)));
  // The module spans shards: its fused tensor is attributed to the index.
  EXPECT_EQ(view.whereOf(up), sharded->where());
  EXPECT_EQ(view.whereOf("model.embed_tokens.weight"), sharded->whereOf("model.embed_tokens.weight"));
}

TEST(ShardedSafetensors, NonFiniteValuesAreNamedWithTheirShard) {
  TempDir dir;
  TensorList tensors = equalTensors(4);
  tensors[2].second.view({-1})[5] = std::numeric_limits<float>::infinity();
  const auto files = writeShardedSafetensors(dir.file("ckpt"), tensors, /*maxShardBytes=*/64);
  auto source = openCheckpoint(dir.file("ckpt"));
  const std::string e = errorOf([&] { requireFiniteTensors(*source); });
  EXPECT_NE(e.find(dir.file("ckpt/" + files[2]) + ": tensor 't02' holds non-finite values: index [1, 1] (flat 5) is inf"),
            std::string::npos)
      << e;
  // Allowed (not scanned), the value reads back as written.
  EXPECT_TRUE(std::isinf(source->read("t02").view({-1})[5].item<float>()));
  EXPECT_NO_THROW(requireFiniteTensors(*source, {"t00", "t01", "t03"}));
}

// --- openCheckpoint --------------------------------------------------------------

TEST(OpenCheckpoint, AcceptsEveryFormAndRefusesAnAmbiguousDirectory) {
  TempDir dir;
  const TensorList tensors = equalTensors(3);
  fs::create_directories(dir.file("single"));
  writeSafetensors(dir.file("single/model.safetensors"), tensors);
  writeShardedSafetensors(dir.file("sharded"), tensors, /*maxShardBytes=*/64);

  auto fromDir = openCheckpoint(dir.file("single"));
  EXPECT_NE(dynamic_cast<SafetensorsReader*>(fromDir.get()), nullptr);
  EXPECT_EQ(fromDir->where(), dir.file("single/model.safetensors"));
  expectSameTensors(*fromDir, tensors);
  expectSameTensors(*openCheckpoint(dir.file("single/model.safetensors")), tensors);
  auto fromIndexDir = openCheckpoint(dir.file("sharded"));
  EXPECT_NE(dynamic_cast<ShardedSafetensorsSource*>(fromIndexDir.get()), nullptr);
  expectSameTensors(*fromIndexDir, tensors);
  expectSameTensors(*openCheckpoint(dir.file("sharded/model.safetensors.index.json")), tensors);
  // A shard is itself a safetensors file.
  EXPECT_EQ(openCheckpoint(dir.file("sharded/model-00002-of-00003.safetensors"))->names(),
            std::vector<std::string>{"t01"});

  writeSafetensors(dir.file("sharded/model.safetensors"), tensors);
  std::string e = errorOf([&] { openCheckpoint(dir.file("sharded")); });
  EXPECT_NE(e.find("checkpoint " + dir.file("sharded") +
                   ": holds both model.safetensors and model.safetensors.index.json (ambiguous"),
            std::string::npos)
      << e;
  // Naming the file resolves it.
  EXPECT_NO_THROW(openCheckpoint(dir.file("sharded/model.safetensors.index.json")));

  fs::create_directories(dir.file("empty"));
  e = errorOf([&] { openCheckpoint(dir.file("empty")); });
  EXPECT_NE(e.find("checkpoint " + dir.file("empty") +
                   ": directory holds neither model.safetensors nor model.safetensors.index.json"),
            std::string::npos)
      << e;
  e = errorOf([&] { openCheckpoint(dir.file("nope")); });
  EXPECT_NE(e.find("checkpoint " + dir.file("nope") + ": no such file"), std::string::npos) << e;
}

TEST(WriteShardedSafetensors, RefusesWhatItCannotWriteUnambiguously) {
  TempDir dir;
  std::string e = errorOf([&] { writeShardedSafetensors(dir.file("a"), {}, 64); });
  EXPECT_NE(e.find(dir.file("a") + ": no tensors to write"), std::string::npos) << e;
  e = errorOf([&] { writeShardedSafetensors(dir.file("a"), equalTensors(1), 0); });
  EXPECT_NE(e.find("at least 1 byte, got 0"), std::string::npos) << e;
  TensorList twice = equalTensors(2);
  twice.push_back(twice[0]);
  e = errorOf([&] { writeShardedSafetensors(dir.file("b"), twice, 64); });
  EXPECT_NE(e.find(dir.file("b") + ": tensor 't00' is given twice"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir.file("b/model-00001-of-00003.safetensors")));
  fs::create_directories(dir.file("c"));
  writeSafetensors(dir.file("c/model.safetensors"), equalTensors(1));
  e = errorOf([&] { writeShardedSafetensors(dir.file("c"), equalTensors(1), 64); });
  EXPECT_NE(e.find(dir.file("c") + ": already holds model.safetensors"), std::string::npos) << e;
}

// --- bad input ---------------------------------------------------------------------
// Shards s1 = {a, b} and s2 = {c} (64 bytes each tensor); each test writes an
// index, and the valid one opens (so a failure below is the input's doing).

class BadIndex : public ::testing::Test {
 protected:
  void SetUp() override {
    writeSafetensors(dir_.file("s1.safetensors"), {{"a", origin(0, {16})}, {"b", origin(1, {16})}});
    writeSafetensors(dir_.file("s2.safetensors"), {{"c", origin(2, {16})}});
  }
  std::string index() const { return dir_.file("model.safetensors.index.json"); }
  // The error of opening the index `text`, "" when it opens.
  std::string errorFor(const std::string& text) {
    writeBytes(index(), text);
    try {
      ShardedSafetensorsSource source(index());
    } catch (const HarnessError& e) {
      return e.what();
    }
    return "";
  }
  void expectError(const std::string& text, const std::vector<std::string>& parts) {
    const std::string e = errorFor(text);
    ASSERT_FALSE(e.empty()) << "no error for " << text;
    EXPECT_EQ(e.rfind(index() + ": ", 0), 0u) << e;  // names the index file first
    for (const auto& p : parts) EXPECT_NE(e.find(p), std::string::npos) << "'" << p << "' not in: " << e;
  }
  static constexpr const char* kValidMap =
      R"("weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"})";
  TempDir dir_;
};

TEST_F(BadIndex, TheValidIndexOpens) {
  EXPECT_EQ(errorFor(str("{", kValidMap, "}")), "");
  EXPECT_EQ(errorFor(str(R"({"metadata": {"total_size": 192, "format": "pt"}, )", kValidMap, "}")), "");
  EXPECT_EQ(errorFor(str(R"({"metadata": {"total_size": 192.0}, )", kValidMap, "}")), "");
  ShardedSafetensorsSource source(index());
  EXPECT_EQ(source.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(source.index().totalSize, std::optional<uint64_t>(192));
}

TEST_F(BadIndex, NotValidJson) {
  expectError(R"({"weight_map": {"a": "s1.safetensors",})", {"index is not valid JSON", "parse_error"});
  expectError("[1, 2]", {"the index is [1,2], not a JSON object"});
}

TEST_F(BadIndex, WeightMapMissingNotAnObjectOrEmpty) {
  expectError(R"({"metadata": {"total_size": 192}})", {"no \"weight_map\""});
  expectError(R"({"weight_map": ["s1.safetensors"]})", {"\"weight_map\" is [\"s1.safetensors\"], not an object"});
  expectError(R"({"weight_map": {}})", {"\"weight_map\" is empty"});
}

TEST_F(BadIndex, AValueThatIsNotAString) {
  expectError(R"({"weight_map": {"a": "s1.safetensors", "b": 1, "c": "s2.safetensors"}})",
              {"weight_map: tensor 'b' maps to 1, not a shard file name"});
  expectError(R"({"weight_map": {"a": null}})", {"tensor 'a' maps to null"});
}

TEST_F(BadIndex, ATensorListedTwice) {
  expectError(R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors",
                                 "a": "s2.safetensors"}})",
              {"weight_map: tensor 'a' is listed twice"});
  expectError(str(R"({"metadata": {"total_size": 192, "total_size": 1}, )", kValidMap, "}"),
              {"metadata: duplicate key 'total_size'"});
  expectError(str("{", kValidMap, ", ", kValidMap, "}"), {"duplicate key 'weight_map' in the index"});
}

TEST_F(BadIndex, AMissingShardFileIsNamedWithATensorMappedToIt) {
  expectError(R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s3.safetensors"}})",
              {"shard file 's3.safetensors' does not exist", dir_.file("s3.safetensors"),
               "maps 1 tensor to it, e.g. 'c'"});
}

TEST_F(BadIndex, ShardPathsOutsideTheDirectoryAreRefused) {
  for (const std::string bad : {"../s1.safetensors", "/etc/passwd", "sub/../../s1.safetensors", ""})
    expectError(str(R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "c": ")", bad, R"("}})"),
                {"weight_map: tensor 'c': shard file '" + bad + "' is outside the checkpoint directory"});
}

TEST_F(BadIndex, ATensorInTwoShardFiles) {
  writeSafetensors(dir_.file("s2.safetensors"), {{"a", origin(0, {16})}, {"c", origin(2, {16})}});
  expectError(str("{", kValidMap, "}"),
              {"tensor 'a' is in two shard files, 's1.safetensors' and 's2.safetensors'",
               "the index maps it to 's1.safetensors'"});
}

TEST_F(BadIndex, AShardLackingATensorTheIndexPromises) {
  expectError(R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors",
                                 "d": "s2.safetensors"}})",
              {"tensor 'd': the index maps it to shard 's2.safetensors', which does not hold it"});
  // Mapped to the other shard: the promise is broken, whatever s1 holds.
  expectError(R"({"weight_map": {"a": "s2.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"}})",
              {"tensor 'a': the index maps it to shard 's2.safetensors', which does not hold it"});
}

TEST_F(BadIndex, AShardHoldingATensorTheIndexDoesNotList) {
  expectError(R"({"weight_map": {"a": "s1.safetensors", "c": "s2.safetensors"}})",
              {"shard 's1.safetensors' holds tensor 'b', which the index does not list"});
}

TEST_F(BadIndex, TotalSizeMustMatchTheTensorsBytes) {
  expectError(str(R"({"metadata": {"total_size": 200}, )", kValidMap, "}"),
              {"metadata.total_size is 200 but the shards' tensors hold 192 bytes"});
  expectError(str(R"({"metadata": {"total_size": "192"}, )", kValidMap, "}"),
              {"metadata.total_size is \"192\", not a non-negative integer"});
  expectError(str(R"({"metadata": {"total_size": -1}, )", kValidMap, "}"), {"metadata.total_size is -1"});
  expectError(str(R"({"metadata": {"total_size": 191.5}, )", kValidMap, "}"), {"metadata.total_size is 191.5"});
  expectError(str(R"({"metadata": [192], )", kValidMap, "}"), {"\"metadata\" is [192], not an object"});
}

TEST_F(BadIndex, ACorruptShardIsNamedByItsPath) {
  writeBytes(dir_.file("s2.safetensors"), "not a safetensors file");
  writeBytes(index(), str("{", kValidMap, "}"));
  const std::string e = errorOf([&] { ShardedSafetensorsSource source(index()); });
  EXPECT_EQ(e.rfind(dir_.file("s2.safetensors") + ": ", 0), 0u) << e;
}

}  // namespace
}  // namespace moe::io
