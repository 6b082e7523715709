// Test driver: writes a Hugging Face sharded checkpoint with
// writeShardedSafetensors, for the Python oracle (harness/cli/tests/
// sharded_checkpoint_oracle.py), which reads it with the `safetensors`
// package. Usage: write_sharded DIR MAX_SHARD_BYTES
// Tensors (in this order; values encode their origin, element i of tensor k
// is 1000·k + i converted to the dtype):
//   k=0 "model.embed_tokens.weight" F32  [6, 8]
//   k=1 "model.norm.weight"         BF16 [8]
//   k=2 "model.layers.0.mlp.gate"   F16  [4, 8]
//   k=3 "positions"                 I64  [2, 3]
//   k=4 "lm_head.weight"            F32  [64, 8]   (larger than small limits)
//   k=5 "model.layers.0.scale"      F64  [3]
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "reference/io/sharded_safetensors.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s DIR MAX_SHARD_BYTES\n", argv[0]);
    return 64;
  }
  struct Spec {
    const char* name;
    at::ScalarType type;
    std::vector<int64_t> shape;
  };
  const std::vector<Spec> specs = {{"model.embed_tokens.weight", at::kFloat, {6, 8}},
                                   {"model.norm.weight", at::kBFloat16, {8}},
                                   {"model.layers.0.mlp.gate", at::kHalf, {4, 8}},
                                   {"positions", at::kLong, {2, 3}},
                                   {"lm_head.weight", at::kFloat, {64, 8}},
                                   {"model.layers.0.scale", at::kDouble, {3}}};
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (size_t k = 0; k < specs.size(); ++k) {
    int64_t n = 1;
    for (int64_t d : specs[k].shape) n *= d;
    tensors.emplace_back(specs[k].name,
                         (at::arange(n, at::kDouble) + 1000.0 * static_cast<double>(k)).reshape(specs[k].shape).to(specs[k].type));
  }
  try {
    moe::io::WriteOptions o;
    o.metadata["format"] = "pt";  // what Hugging Face writes in every shard
    for (const auto& f :
         moe::io::writeShardedSafetensors(argv[1], tensors, std::strtoull(argv[2], nullptr, 10), o))
      std::printf("%s\n", f.c_str());
  } catch (const moe::HarnessError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
