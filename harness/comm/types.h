#pragma once
// Small value types shared by the communicator, its backends and the flight
// recorder.
#include <cstdint>
#include <string>

namespace moe::comm {

// Reduction ops. Reductions run in the tensor's own dtype, as NCCL does: a
// bfloat16 sum rounds to bfloat16 after every addition, and kAvg on int64 is
// the integer quotient of the sum (truncated toward zero).
enum class ReduceOp : int32_t { kSum = 0, kAvg = 1, kMax = 2, kMin = 3 };

enum class OpType : int32_t {
  kAllReduce = 0,
  kBroadcast,
  kBarrier,
  kSend,
  kRecv,
  kAllGather,
  kReduceScatter,
  kAllToAll,
  kNumOps,
};

// How a communicator verifies that the members of a group call the same
// collective with consistent sizes (communicator.h "Verification").
enum class VerifyMode : int32_t { kOff = 0, kInBand = 1, kTrace = 2 };
const char* verifyModeName(VerifyMode m);  // "off", "in-band", "trace"

const char* opName(OpType op);
const char* reduceOpName(ReduceOp op);
// torch's name of a c10::ScalarType value ("float32", "bfloat16", ...), "-" for < 0.
std::string dtypeName(int32_t scalarType);

}  // namespace moe::comm
