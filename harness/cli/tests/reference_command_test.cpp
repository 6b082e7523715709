// The `reference` subcommand end to end, in process: files written, numbers
// equal to a direct train() call, and checkpoints in either expert layout,
// one file or Hugging Face shards.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <filesystem>
#include <limits>
#include <fstream>

#include "common/error.h"
#include "reference/io/expert_layout.h"
#include "reference/io/safetensors.h"
#include "reference/io/sharded_safetensors.h"
#include "reference/model/init.h"
#include "harness/cli/reference_command.h"
#include "reference/train/reference_run.h"

namespace moe::ref {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

class ReferenceCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           str("moe_ref_cli_", ::testing::UnitTest::GetInstance()->current_test_info()->name(), "_",
               ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    config_ = tinyTestConfig();
    std::ofstream(dir_ / "config.json") << config_.toJson().dump();
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Parses and runs `moe-harness reference <args>`.
  void run(std::vector<std::string> args) {
    CLI::App app("test");
    addReferenceCommand(app);
    args.insert(args.begin(), "reference");
    std::reverse(args.begin(), args.end());  // CLI11 parses a reversed vector
    app.parse(args);
  }

  json losses(const fs::path& out) {
    json j;
    std::ifstream(out / "losses.json") >> j;
    return j;
  }

  fs::path dir_;
  ModelConfig config_;
};

TEST_F(ReferenceCommand, WritesFilesMatchingDirectTraining) {
  const auto out = dir_ / "out";
  run({"--config", (dir_ / "config.json").string(), "--steps", "3", "--dtype", "bf16", "--seed", "5",
       "--out", out.string()});
  for (const char* f : {"config.json", "model.safetensors", "batches.safetensors", "losses.json",
                        "grads_step1.safetensors", "model_final.safetensors"})
    EXPECT_TRUE(fs::exists(out / f)) << f;

  TrainOptions o;
  o.steps = 3;
  o.precision = Precision::kBf16;
  o.seed = 5;
  auto direct = train(config_, o);
  auto j = losses(out);
  ASSERT_EQ(j["steps"].size(), 3u);
  for (size_t s = 0; s < 3; ++s) {
    EXPECT_EQ(j["steps"][s]["loss"].get<double>(), direct.steps[s].loss);
    EXPECT_EQ(j["steps"][s]["grad_norm"].get<double>(), direct.steps[s].gradNorm);
  }
  EXPECT_EQ(j["hyperparameters"]["dtype"], "bf16");
  EXPECT_EQ(j["hyperparameters"]["optimizer"]["lr"].get<double>(), 1e-3);

  io::SafetensorsReader model((out / "model.safetensors").string());
  auto init = initParameters(config_, 5);
  EXPECT_EQ(model.names().size(), init.size());
  for (const auto& item : init) EXPECT_TRUE(torch::equal(model.read(item.key()), item.value())) << item.key();
  io::SafetensorsReader grads((out / "grads_step1.safetensors").string());
  for (const auto& item : direct.gradsStep1)
    EXPECT_TRUE(torch::equal(grads.read(item.key()), item.value())) << item.key();
  io::SafetensorsReader batches((out / "batches.safetensors").string());
  EXPECT_TRUE(torch::equal(batches.read("step_2"), trainBatch(config_, o, 2)));
  EXPECT_EQ(ModelConfig::fromFile((out / "config.json").string()).toJson(), config_.toJson());
}

TEST_F(ReferenceCommand, HubLayoutCheckpointGivesTheSameRun) {
  auto init = initParameters(config_, 9);
  std::vector<std::pair<std::string, at::Tensor>> list;
  for (const auto& item : init) list.emplace_back(item.key(), item.value());
  fs::create_directories(dir_ / "hub");
  io::writeSafetensors((dir_ / "hub" / "model.safetensors").string(), io::toHubLayout(list));
  io::SafetensorsReader hub((dir_ / "hub" / "model.safetensors").string());
  EXPECT_TRUE(hub.has("model.layers.1.mlp.experts.3.down_proj.weight"));

  run({"--config", (dir_ / "config.json").string(), "--steps", "2", "--seed", "9", "--out",
       (dir_ / "seeded").string()});
  run({"--config", (dir_ / "config.json").string(), "--steps", "2", "--seed", "9", "--checkpoint",
       (dir_ / "hub").string(), "--out", (dir_ / "loaded").string()});
  auto a = losses(dir_ / "seeded"), b = losses(dir_ / "loaded");
  for (size_t s = 0; s < 2; ++s) EXPECT_EQ(a["steps"][s]["loss"], b["steps"][s]["loss"]);
  EXPECT_EQ(a["steps"][1]["param_checksums"], b["steps"][1]["param_checksums"]);
}

TEST_F(ReferenceCommand, CheckpointErrorsNameTheTensor) {
  auto init = initParameters(config_, 1);
  std::vector<std::pair<std::string, at::Tensor>> list;
  for (const auto& item : init)
    if (item.key() != "model.layers.0.self_attn.k_norm.weight") list.emplace_back(item.key(), item.value());
  io::writeSafetensors((dir_ / "missing.safetensors").string(), list);
  try {
    loadCheckpoint((dir_ / "missing.safetensors").string(), config_);
    ADD_FAILURE() << "no error";
  } catch (const HarnessError& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.self_attn.k_norm.weight"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(run({"--config", (dir_ / "config.json").string(), "--steps", "1", "--dtype", "fp16",
                    "--out", (dir_ / "x").string()}),
               CLI::ValidationError);
}

// The same weights as one model.safetensors, as Hugging Face shards in the
// fused layout, and as shards in the hub (per-expert) layout: three runs
// with exactly the same losses and parameters.
TEST_F(ReferenceCommand, ShardedCheckpointGivesExactlyTheSameRunAsOneFile) {
  auto init = initParameters(config_, 9);
  std::vector<std::pair<std::string, at::Tensor>> list;
  for (const auto& item : init) list.emplace_back(item.key(), item.value());
  fs::create_directories(dir_ / "single");
  io::writeSafetensors((dir_ / "single" / "model.safetensors").string(), list);
  // 4 KiB shards split the test config's tensors over several files.
  const auto fused = io::writeShardedSafetensors((dir_ / "fused").string(), list, /*maxShardBytes=*/4 << 10);
  const auto hub = io::writeShardedSafetensors((dir_ / "hub").string(), io::toHubLayout(list), 4 << 10);
  ASSERT_GE(fused.size(), 3u);
  ASSERT_GE(hub.size(), 3u);

  const std::vector<std::string> base = {"--config", (dir_ / "config.json").string(), "--steps", "2", "--seed", "3"};
  auto runFrom = [&](const std::string& ckpt, const std::string& out) {
    auto args = base;
    for (const std::string& a : {std::string("--checkpoint"), (dir_ / ckpt).string(), std::string("--out"),
                                 (dir_ / out).string()})
      args.push_back(a);
    run(args);
    return losses(dir_ / out);
  };
  const json single = runFrom("single", "out_single");
  for (const auto& [ckpt, out] : {std::pair<std::string, std::string>{"fused", "out_fused"}, {"hub", "out_hub"}}) {
    const json sharded = runFrom(ckpt, out);
    ASSERT_EQ(sharded["steps"].size(), 2u) << ckpt;
    for (size_t s = 0; s < 2; ++s) {
      EXPECT_EQ(sharded["steps"][s]["loss"], single["steps"][s]["loss"]) << ckpt << " step " << s;
      EXPECT_EQ(sharded["steps"][s]["grad_norm"], single["steps"][s]["grad_norm"]) << ckpt << " step " << s;
    }
    EXPECT_EQ(sharded["steps"][1]["param_checksums"], single["steps"][1]["param_checksums"]) << ckpt;
  }
}

TEST_F(ReferenceCommand, ShardedCheckpointErrorsNameTheShard) {
  auto init = initParameters(config_, 2);
  std::vector<std::pair<std::string, at::Tensor>> list;
  for (const auto& item : init) list.emplace_back(item.key(), item.value().clone());
  list.back().second.view({-1})[0] = std::numeric_limits<float>::quiet_NaN();
  const auto files = io::writeShardedSafetensors((dir_ / "nan").string(), list, /*maxShardBytes=*/16 << 10);
  const std::string shard = (dir_ / "nan" / files.back()).string();
  try {
    loadCheckpoint((dir_ / "nan").string(), config_);
    ADD_FAILURE() << "no error";
  } catch (const HarnessError& e) {
    EXPECT_EQ(std::string(e.what()).rfind(shard + ": tensor '" + list.back().first + "' holds non-finite values", 0), 0u)
        << e.what();
  }
  // Allowed, it loads (and the NaN is kept).
  const ParamMap p = loadCheckpoint((dir_ / "nan").string(), config_, CheckpointOptions{/*allowNonFinite=*/true});
  EXPECT_TRUE(std::isnan(p[list.back().first].view({-1})[0].item<float>()));

  // Both a single file and an index: refused, naming both.
  io::writeSafetensors((dir_ / "nan" / "model.safetensors").string(), list);
  try {
    loadCheckpoint((dir_ / "nan").string(), config_);
    ADD_FAILURE() << "no error";
  } catch (const HarnessError& e) {
    EXPECT_NE(std::string(e.what()).find("holds both model.safetensors and model.safetensors.index.json"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace moe::ref
