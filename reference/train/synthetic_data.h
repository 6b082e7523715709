#pragma once
// Deterministic, learnable synthetic token batches.
//
// Row r of the global batch of step `step` is an arithmetic sequence mod vocab:
//   token[t] = (start + t * stride) mod vocab
// with start uniform in [0, vocab) and stride uniform in [1, kMaxStride], both
// drawn from splitmix64(seed, step, r). After two tokens the rest of the row
// is predictable, so a model's loss falls well below ln(vocab).
// The tensor depends only on (seed, step, batch, seqLen, vocab): a rank can
// take its row block or sequence block of the same global batch.
#include <torch/torch.h>

#include <cstdint>

namespace moe::ref {

constexpr int64_t kMaxStride = 3;

struct BatchOptions {
  int64_t batchSize = 4;
  int64_t seqLen = 16;
  int64_t vocabSize = 32;
  uint64_t seed = 0;
};

// -> [batchSize, seqLen] int64
torch::Tensor syntheticBatch(const BatchOptions& options, int64_t step);

}  // namespace moe::ref
