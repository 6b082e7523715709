// The reference run's memory at a width where parameters dominate: its
// measured peak of libtorch CPU storage (AllocTracker) against its state
// (parameters + gradients + both AdamW moments, fp32), and a planted copy of
// every gradient that the bound must catch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "common/alloc_tracker.h"
#include "reference/model/config.h"
#include "reference/model/init.h"
#include "reference/train/reference_run.h"
#include "reference/train/trainer.h"

namespace moe::ref {
namespace {
namespace fs = std::filesystem;

// Small but not tiny: 3.1 M parameters (experts 1.57 M, dense MLP 0.59 M,
// attention 0.39 M, embeddings 0.52 M), 49 MB of state, against activations
// of a 4 x 16 batch of well under 1 MB.
const char* kConfig = R"({
  "model_type": "qwen3_moe", "vocab_size": 1024, "hidden_size": 256, "intermediate_size": 768,
  "moe_intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "head_dim": 64, "num_experts": 16, "num_experts_per_tok": 4,
  "norm_topk_prob": true, "mlp_only_layers": [0], "decoder_sparse_step": 1,
  "shared_expert_intermediate_size": 0, "router_aux_loss_coef": 0.01, "rms_norm_eps": 1e-6,
  "rope_theta": 10000.0, "tie_word_embeddings": false, "max_position_embeddings": 64,
  "experts_implementation": "grouped"})";

// The bound, derived: the run's state is S = 4 x 4 B x N (fp32 parameters,
// gradients, exp_avg, exp_avg_sq). Beyond it the run may hold activations
// and autograd buffers of one 64-token batch (< 1 MB = 0.02 S here) and
// block-sized temporaries of the checksums, the norm and AdamW (64 Ki
// elements: < 2 MB = 0.04 S). Any full copy of the parameters, the gradients
// or a moment adds N x 4 B = 0.25 S. So 1.1 S separates "state only" from
// "state and one stray copy" with a margin on both sides, and is tighter than
// the issue's goal of 1.3 S.
constexpr double kBoundFactor = 1.1;

struct Fixture {
  fs::path dir;
  ModelConfig config;
  int64_t stateBytes = 0;
  Fixture() {
    dir = fs::temp_directory_path() / ("moe-ref-mem-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    std::ofstream(dir / "config.json") << kConfig;
    config = ModelConfig::fromFile((dir / "config.json").string());
    int64_t n = 0;
    for (const auto& spec : parameterSpecs(config)) {
      int64_t e = 1;
      for (auto d : spec.shape) e *= d;
      n += e;
    }
    stateBytes = 4 * 4 * n;
  }
  ~Fixture() { fs::remove_all(dir); }
};

TEST(ReferenceMemory, PeakStaysWithinItsStatePlusTransients) {
  at::set_num_threads(1);
  Fixture f;
  ASSERT_GT(f.stateBytes, 45'000'000);  // the width the bound's derivation assumes
  ReferenceRunOptions o;
  o.configPath = (f.dir / "config.json").string();
  o.outDir = (f.dir / "out").string();
  o.train.steps = 2;
  MemoryWindow window;
  runReference(o);
  const double ratio = static_cast<double>(window.peakDelta()) / static_cast<double>(f.stateBytes);
  EXPECT_LE(ratio, kBoundFactor) << "peak " << window.peakDelta() << " B vs state " << f.stateBytes
                                 << " B: a stray full copy (0.25 of the state each)?";
  EXPECT_GE(ratio, 0.99) << "the run holds at least its state at the optimizer step";
  EXPECT_TRUE(fs::exists(f.dir / "out" / "model_final.safetensors"));
}

// The bound catches one full copy: the same training, with the trainer
// keeping a copy of every gradient (what the reference did before).
TEST(ReferenceMemory, BoundCatchesAKeptCopyOfTheGradients) {
  at::set_num_threads(1);
  Fixture f;
  TrainOptions t;
  t.steps = 2;
  MemoryWindow window;
  {
    Trainer trainer(f.config, initParameters(f.config, t.seed), t);  // adopts: no copy of the init
    trainer.keepLastGrads(true);                                      // the planted copy
    for (int s = 0; s < t.steps; ++s) trainer.step();
  }
  const double ratio = static_cast<double>(window.peakDelta()) / static_cast<double>(f.stateBytes);
  EXPECT_GT(ratio, kBoundFactor) << "a kept copy of every gradient must exceed the bound";
  EXPECT_GE(ratio, 1.2);
}

}  // namespace
}  // namespace moe::ref
