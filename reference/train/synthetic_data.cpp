#include "reference/train/synthetic_data.h"

#include "common/error.h"
#include "reference/model/init.h"

namespace moe::ref {

torch::Tensor syntheticBatch(const BatchOptions& o, int64_t step) {
  if (o.batchSize <= 0 || o.seqLen <= 0 || o.vocabSize <= 0)
    fail("data: batch size, sequence length and vocab must be > 0, got ", o.batchSize, ", ",
         o.seqLen, ", ", o.vocabSize);
  auto out = torch::empty({o.batchSize, o.seqLen}, torch::TensorOptions().dtype(torch::kLong));
  int64_t* dst = out.data_ptr<int64_t>();
  const uint64_t stepKey = splitmix64(splitmix64(o.seed) ^ static_cast<uint64_t>(step));
  for (int64_t r = 0; r < o.batchSize; ++r) {
    const uint64_t bits = splitmix64(stepKey ^ splitmix64(static_cast<uint64_t>(r)));
    const int64_t start = static_cast<int64_t>(bits % static_cast<uint64_t>(o.vocabSize));
    const int64_t stride = 1 + static_cast<int64_t>((bits >> 32) % kMaxStride);
    for (int64_t t = 0; t < o.seqLen; ++t) dst[r * o.seqLen + t] = (start + t * stride) % o.vocabSize;
  }
  return out;
}

}  // namespace moe::ref
