#pragma once
// The record of one optimizer step: the one StepRecord type of the project.
// The single-device trainer and the distributed trainer produce it; the
// parity check compares two lists of it; run-plan's result (run_result.h)
// serialises pairs of it. Plain data (no libtorch), so judges can include it
// cheaply.
#include <cstdint>
#include <string>
#include <vector>

namespace moe::ref {

struct TensorChecksum {
  std::string name;
  double sum = 0;         // sum of elements in double
  double absSum = 0;      // sum of |elements| in double
  uint64_t bitHash = 0;   // FNV-1a over the raw bytes (bitwise identity)
};

struct StepRecord {
  int64_t step = 0;  // 1-based
  double loss = 0, ce = 0, aux = 0;
  double gradNorm = 0;  // total norm before clipping
  std::vector<TensorChecksum> gradChecksums;   // gradients before clipping (reference trainer only)
  std::vector<TensorChecksum> paramChecksums;  // parameters after the update (reference trainer only)
};

}  // namespace moe::ref
