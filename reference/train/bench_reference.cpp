// Step time of the reference trainer on a small config: loop vs grouped
// experts, fp32 vs bf16. One intra-op thread, as the reference runs.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "common/error.h"

#include "reference/model/config.h"
#include "reference/model/init.h"
#include "reference/train/trainer.h"

namespace moe::ref {
namespace {

ModelConfig benchConfig(const char* impl) {
  ModelConfig c = tinyTestConfig();
  c.vocabSize = 256;
  c.hiddenSize = 64;
  c.intermediateSize = 128;
  c.moeIntermediateSize = 32;
  c.numHiddenLayers = 2;
  c.numAttentionHeads = 4;
  c.numKeyValueHeads = 2;
  c.headDim = 16;
  c.numExperts = 8;
  c.numExpertsPerTok = 2;
  c.mlpOnlyLayers = {};
  c.maxPositionEmbeddings = 128;
  c.expertsImplementation = impl;
  c.validate();
  return c;
}

// state.range(0): 0 = loop, 1 = grouped; state.range(1): 0 = fp32, 1 = bf16.
void BM_TrainStep(benchmark::State& state) {
  at::set_num_threads(1);
  auto config = benchConfig(state.range(0) == 0 ? "loop" : "grouped");
  TrainOptions o;
  o.precision = state.range(1) == 0 ? Precision::kFp32 : Precision::kBf16;
  o.batchSize = 4;
  o.seqLen = 64;
  Trainer trainer(config, initParameters(config, /*seed=*/0), o);
  for (auto _ : state) benchmark::DoNotOptimize(trainer.step().loss);
  state.SetLabel(moe::str(config.expertsImplementation, " ", precisionName(o.precision), " E=8 k=2 H=64 B=4 S=64"));
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(o.batchSize * o.seqLen),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_TrainStep)->ArgsProduct({{0, 1}, {0, 1}})->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace moe::ref

BENCHMARK_MAIN();
